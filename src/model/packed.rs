//! `x · wᵀ` against a model's weights packed once, when first used, into the layout an
//! AVX2 product kernel streams: panels of 16 output columns, each laid out `k`-major.
//!
//! Why: BLAS's `sgemm` packs each weight block into that kind of layout on every call,
//! because its API cannot know that the weight never changes. On this project's 2-core
//! EPYC (AVX2, no AVX-512) that copy (`sgemm_incopy`, `oncopy`) and the zeroing of the
//! output (`sgemm_beta`) were 13% of a suite's CPU time, and the few-row kernel that
//! decoding used instead of BLAS reached 67–70 GFLOP/s on one core. Packed once, a
//! 6 × 16 register tile (twelve eight-lane accumulators, the weights of 16 columns
//! loaded once per `k` for six rows of `x`) runs at 90–100 GFLOP/s on one core from
//! 120 rows up and 72–78 at 40 rows (`cargo test --release --lib packed::speed --
//! --ignored --nocapture`).
//!
//! Every output is one fused multiply-add chain over `k` in order, starting from zero,
//! whatever the number of rows, the tile an output falls in or how the work is split
//! between threads: a row's result never depends on the rows beside it, at any batch
//! size (batched decoding relies on it: `generate::batch_decodes_rows_alone`).
//!
//! The same tile serves two fused forms: the gated MLP's `silu(x·gateᵀ)·(x·upᵀ)`
//! ([`silu_gated`], neither product formed) and attention's small per-head products
//! ([`gemm_nn`], operands read in place).
//!
//! Where it runs: CPUs with AVX2 and FMA, unless BLAS's AVX-512 kernels and the AVX-512
//! few-row kernel (`skinny.rs`) are there, which earlier measurements on AVX-512 machines
//! put ahead; this kernel is only written for AVX2. `SCALPEL_BLAS=off` turns it off with
//! BLAS (candle's matmul everywhere).

use std::sync::{Arc, OnceLock};

use super::blas::OutPtr;
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Output columns per panel: two eight-lane registers.
const NR: usize = 16;
/// Rows of `x` per tile: with two registers of weights and one broadcast, twelve
/// accumulators fill the sixteen registers.
const MR: usize = 6;
/// Depth of a pass over a panel: a panel's 768 × 16 weights (48 KiB) stay in L2 while
/// every tile of a row block runs over them.
const KC: usize = 768;
/// Rows per block: each panel is read once per block of `x` (192 rows of 768, in L2).
const MC: usize = 192;
/// Products smaller than this run on one thread: splitting them costs more than it saves.
const MIN_SPLIT: usize = 1 << 18;

/// Whether the kernel runs here (see the module doc), decided once.
pub fn available() -> bool {
    static CHOSEN: OnceLock<bool> = OnceLock::new();
    super::blas::requested()
        && *CHOSEN.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma");
                avx2 && !super::skinny::avx512_with_blas()
            }
            #[cfg(not(target_arch = "x86_64"))]
            false
        })
}

/// A weight `[n, k]` in panels: panel `p` holds, for each `kk < k` in order, the
/// weights `w[p·16 + j][kk]` for `j < 16` (zero past `n`).
pub struct Panels {
    n: usize,
    k: usize,
    data: Vec<f32>,
}

impl Panels {
    /// Packs `w` (`[n, k]`, row-major).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "a weight of {n} × {k}");
        let np = n.div_ceil(NR);
        let mut data = vec![0f32; np * k * NR];
        use rayon::prelude::*;
        data.par_chunks_mut(k * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for j in 0..NR.min(n - p * NR) {
                    let row = &w[(p * NR + j) * k..][..k];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * NR + j] = v;
                    }
                }
            });
        Panels { n, k, data }
    }

    /// Packs an f32 CPU tensor `[n, k]`; `None` for anything else.
    fn of(w: &Tensor) -> Result<Option<Self>> {
        if !w.device().is_cpu() || w.dtype() != candle_core::DType::F32 || w.rank() != 2 {
            return Ok(None);
        }
        let (n, k) = w.dims2()?;
        let w = w.contiguous()?;
        let (storage, layout) = w.storage_and_layout();
        let (candle_core::Storage::Cpu(CpuStorage::F32(all)), Some((s, e))) =
            (&*storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        Ok(Some(Panels::pack(&all[s..e], n, k)))
    }
}

/// A linear layer's weight `[out, in]` and, once a product on the CPU needs it, its
/// [`Panels`].
pub struct Weight {
    tensor: Tensor,
    panels: OnceLock<Option<Arc<Panels>>>,
}

impl Weight {
    pub fn new(tensor: Tensor) -> Self {
        Weight {
            tensor,
            panels: OnceLock::new(),
        }
    }

    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
}

/// A weight [`super::ops::linear`] takes: a plain tensor (packed for each product, as a
/// hook's or an edit's small matrices are) or a model's [`Weight`] (packed once).
pub trait LinearWeight {
    fn tensor(&self) -> &Tensor;
    /// The weight in panels; `None` where the kernel does not run (or the weight is
    /// not an f32 CPU matrix).
    fn panels(&self) -> Result<Option<Arc<Panels>>>;
}

impl LinearWeight for Tensor {
    fn tensor(&self) -> &Tensor {
        self
    }

    fn panels(&self) -> Result<Option<Arc<Panels>>> {
        if !available() {
            return Ok(None);
        }
        Ok(Panels::of(self)?.map(Arc::new))
    }
}

impl LinearWeight for Weight {
    fn tensor(&self) -> &Tensor {
        Weight::tensor(self)
    }

    fn panels(&self) -> Result<Option<Arc<Panels>>> {
        if !available() {
            return Ok(None);
        }
        if let Some(p) = self.panels.get() {
            return Ok(p.clone());
        }
        let packed = Panels::of(&self.tensor)?.map(Arc::new);
        Ok(self.panels.get_or_init(|| packed).clone())
    }
}

/// `x · wᵀ` for `x` `[m, k]` (f32, CPU) through the kernel. The caller checks
/// [`available`] and that autograd does not track `x` (this op has no backward).
pub(crate) fn linear(x: &Tensor, w: &Panels) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&PackedLinear(w))
}

struct PackedLinear<'a>(&'a Panels);

impl CustomOp1 for PackedLinear<'_> {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = self.0;
        let (x, m) = rows_of(self.name(), s, l, w.k)?;
        let (n, k) = (w.n, w.k);
        if k == 0 {
            return Ok((CpuStorage::F32(vec![0f32; m * n]), Shape::from((m, n))));
        }
        // Not zeroed: the first pass over `k` writes every element without reading it,
        // and zeroing a `[positions, vocab]` output first was a serial pass over it.
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        // SAFETY: `out` has room for m × n floats and nothing else refers to it.
        unsafe {
            product(x, m, w, OutPtr(out.as_mut_ptr()));
            out.set_len(m * n);
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// The rows of a contiguous f32 input `[m, k]` to the kernel's ops, and `m`; an error
/// naming `op` for anything else.
fn rows_of<'a>(op: &str, s: &'a CpuStorage, l: &Layout, k: usize) -> Result<(&'a [f32], usize)> {
    let CpuStorage::F32(all) = s else {
        candle_core::bail!("{op}: f32 input only, got {:?}", s.dtype());
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous");
    };
    let (m, width) = l.shape().dims2()?;
    if width != k {
        candle_core::bail!("{op}: input width {width}, weight width {k}");
    }
    Ok((&all[start..end], m))
}

/// `silu(x · gateᵀ) · (x · upᵀ)`, the gated MLP's activation, without forming either
/// product: per tile, the gate's and the up projection's 6 × 16 outputs go to a scratch
/// buffer in L1 and come out combined. Gives the bits of the two products followed by
/// [`super::gated::silu_mul`]. `None` where it does not apply: the two weights differ in
/// shape, or `k` needs more than one pass (the gate's partial sums would need a home).
/// The caller checks [`available`], that autograd does not track `x` and that no hook
/// reads or writes the gate's product.
pub(crate) fn silu_gated(x: &Tensor, gate: &Panels, up: &Panels) -> Result<Option<Tensor>> {
    if gate.n != up.n || gate.k != up.k || gate.k > KC || gate.k == 0 {
        return Ok(None);
    }
    x.contiguous()?
        .apply_op1_no_bwd(&SiluGated(gate, up))
        .map(Some)
}

struct SiluGated<'a>(&'a Panels, &'a Panels);

impl CustomOp1 for SiluGated<'_> {
    fn name(&self) -> &'static str {
        "packed-silu-gated"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (self.0, self.1);
        let (x, m) = rows_of(self.name(), s, l, gate.k)?;
        let n = gate.n;
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        let ptr = OutPtr(out.as_mut_ptr());
        split(m, gate, |panels| {
            // SAFETY: `out` has room for m × n floats and nothing else refers to it;
            // this block writes only its panels' columns.
            unsafe { gated_block(x, m, gate, up, panels, ptr) }
        });
        // SAFETY: the blocks wrote every element.
        unsafe { out.set_len(m * n) };
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// The columns of `panels` of `silu(x · gateᵀ) · (x · upᵀ)` in one pass over `k ≤ KC`.
///
/// # Safety
/// As [`block`]; `gate` and `up` have one shape.
unsafe fn gated_block(
    x: &[f32],
    m: usize,
    gate: &Panels,
    up: &Panels,
    panels: std::ops::Range<usize>,
    out: OutPtr,
) {
    let (n, k) = (gate.n, gate.k);
    let mut g = [0f32; MR * NR];
    let mut u = [0f32; MR * NR];
    let mut h = [0f32; MR * NR];
    for m0 in (0..m).step_by(MC) {
        let mc = MC.min(m - m0);
        for p in panels.clone() {
            let gb = gate.data.as_ptr().add(p * k * NR);
            let ub = up.data.as_ptr().add(p * k * NR);
            let cols = NR.min(n - p * NR);
            for i in (0..mc).step_by(MR) {
                let rows = MR.min(mc - i);
                let a = x.as_ptr().add((m0 + i) * k);
                tile(rows, k, a, k, gb, NR, g.as_mut_ptr(), NR, true);
                tile(rows, k, a, k, ub, NR, u.as_mut_ptr(), NR, true);
                #[cfg(target_arch = "x86_64")]
                if cols == NR {
                    let dst = out.at((m0 + i) * n + p * NR);
                    super::gated::silu_mul_rows16(rows, &g, &u, dst, n);
                    continue;
                }
                // A last, partial panel: the whole scratch in one call, whatever `rows`
                // (16 floats a row would go mostly to the vector loop's scalar tail).
                super::gated::silu_mul_into(&mut h, &g, &u);
                for r in 0..rows {
                    let dst =
                        std::slice::from_raw_parts_mut(out.at((m0 + i + r) * n + p * NR), cols);
                    dst.copy_from_slice(&h[r * NR..][..cols]);
                }
            }
        }
    }
}

/// Vocabulary columns scored at a time by [`target_log_probs`]: a row block's logits for
/// them stay in cache between the tiles that write them and the normaliser that reads
/// them.
const SCORE_COLS: usize = 256;
/// Rows per block of [`target_log_probs`], at most: each block streams the whole weight
/// from memory, which the tile waits on at 80–96 rows a block (150 GFLOP/s on two cores
/// against 175 at 320, `score_speed`).
const SCORE_ROWS: usize = 320;

/// Per row `i` of `x` `[m, k]`: the log-probability of token `targets[i]` under
/// `softmax(x · wᵀ)`, and whether that token is the row's first maximum, without
/// forming the product. An unembedding's `[positions, vocab]` product (49k columns on
/// SmolLM2) went to memory and came back twice (the finite check, the normaliser);
/// here each row block's logits live a few hundred columns at a time in cache
/// ([`super::softmax::PiecewiseLogNorm`]). The logits have the product's bits; the
/// normaliser is [`super::softmax::max_logsumexp`]'s to about 1e-6. Rows are split
/// between threads, so a row's score does not depend on the thread count. `None` when
/// a logit is infinite or NaN: the caller's checked path names it. The caller checks
/// [`available`].
pub(crate) fn target_log_probs(
    x: &Tensor,
    w: &Panels,
    targets: &[u32],
) -> Result<Option<Vec<(f64, bool)>>> {
    const OP: &str = "packed-target-log-probs";
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{OP}: CPU input only");
    };
    let (x, m) = rows_of(OP, cpu, layout, w.k)?;
    if targets.len() != m {
        candle_core::bail!("{OP}: {m} rows but {} target tokens", targets.len());
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= w.n) {
        candle_core::bail!("{OP}: target token {t} is past the {} logits of a row", w.n);
    }
    // As many blocks per thread, so that no thread waits on another's last one.
    let threads = rayon::current_num_threads().max(1);
    let blocks = threads * m.div_ceil(threads * SCORE_ROWS).max(1);
    let rb = m.div_ceil(blocks).next_multiple_of(MR).max(MR);
    use rayon::prelude::*;
    let starts: Vec<usize> = (0..m).step_by(rb).collect();
    let k = w.k;
    let scores: Vec<Option<(f64, bool)>> = starts
        .into_par_iter()
        .flat_map_iter(|r0| {
            let rows = rb.min(m - r0);
            // SAFETY: the kernel runs here (the caller checked); the slice is these rows.
            unsafe { score_block(&x[r0 * k..(r0 + rows) * k], rows, w, &targets[r0..][..rows]) }
        })
        .collect();
    Ok(scores.into_iter().collect())
}

/// [`target_log_probs`] for one block of `m` rows, on the calling thread.
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds `m` rows of `w.k` floats.
unsafe fn score_block(
    x: &[f32],
    m: usize,
    w: &Panels,
    targets: &[u32],
) -> Vec<Option<(f64, bool)>> {
    use super::softmax::PiecewiseLogNorm;
    let per = SCORE_COLS / NR;
    let np = w.n.div_ceil(NR);
    let mut logits = vec![0f32; m * SCORE_COLS];
    let mut norms = vec![PiecewiseLogNorm::default(); m];
    let mut picked = vec![0f32; m];
    for p0 in (0..np).step_by(per) {
        let p1 = (p0 + per).min(np);
        let (first, cols) = (p0 * NR, (p1 * NR).min(w.n) - p0 * NR);
        block(x, m, w, p0..p1, OutPtr(logits.as_mut_ptr()), SCORE_COLS);
        for (r, row) in logits.chunks_exact(SCORE_COLS).enumerate() {
            let row = &row[..cols];
            norms[r].push(row);
            if let Some(x) = (targets[r] as usize)
                .checked_sub(first)
                .and_then(|t| row.get(t))
            {
                picked[r] = *x;
            }
        }
    }
    norms
        .iter()
        .zip(&picked)
        .zip(targets)
        .map(|((norm, &x), &t)| {
            let (max, lse, argmax) = norm.finish()?;
            Some(((x - max) as f64 - lse, argmax == t as usize))
        })
        .collect()
}

/// `out ← x · wᵀ`, `out` `[m, n]` row-major, every element written (for `k > 0`).
///
/// # Safety
/// `out` must address `m × w.n` floats that nothing else reads or writes meanwhile.
unsafe fn product(x: &[f32], m: usize, w: &Panels, out: OutPtr) {
    // SAFETY: x is m × k and out m × n; each block writes only its panels' columns.
    split(m, w, |panels| unsafe {
        block(
            x,
            m,
            w,
            panels.clone(),
            OutPtr(out.at(panels.start * NR)),
            w.n,
        )
    })
}

/// Runs `run` on the panels of `w` split into one range per thread of rayon's pool (each
/// thread reads only its share of the weight), or on all of them for a small product.
fn split(m: usize, w: &Panels, run: impl Fn(std::ops::Range<usize>) + Sync) {
    let np = w.n.div_ceil(NR);
    let threads = if m * w.n * w.k < MIN_SPLIT {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    let per = np.div_ceil(threads).max(1);
    let starts: Vec<usize> = (0..np).step_by(per).collect();
    if starts.len() == 1 {
        run(0..np);
    } else {
        use rayon::prelude::*;
        starts
            .into_par_iter()
            .for_each(|p0| run(p0..(p0 + per).min(np)));
    }
}

/// The columns of `panels` of `x · wᵀ`, `KC` deep at a time: the first pass starts each
/// output at zero and later ones continue its chain from what `out` holds. `out`
/// addresses row 0 at the first panel's first column, rows `ldc` apart.
///
/// # Safety
/// `out` must address `m` rows of `ldc` floats, each with room for these panels'
/// columns, that nobody else reads or writes meanwhile.
unsafe fn block(
    x: &[f32],
    m: usize,
    w: &Panels,
    panels: std::ops::Range<usize>,
    out: OutPtr,
    ldc: usize,
) {
    let (n, k) = (w.n, w.k);
    let p0 = panels.start;
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for m0 in (0..m).step_by(MC) {
            let mc = MC.min(m - m0);
            for p in panels.clone() {
                let b = w.data.as_ptr().add((p * k + k0) * NR);
                let cols = NR.min(n - p * NR);
                for i in (0..mc).step_by(MR) {
                    let rows = MR.min(mc - i);
                    let a = x.as_ptr().add((m0 + i) * k + k0);
                    let c = out.at((m0 + i) * ldc + (p - p0) * NR);
                    if cols == NR {
                        tile(rows, kc, a, k, b, NR, c, ldc, k0 == 0);
                    } else {
                        // A last, partial panel: through a full-width buffer.
                        let mut buf = [0f32; MR * NR];
                        if k0 > 0 {
                            for r in 0..rows {
                                let src = std::slice::from_raw_parts(c.add(r * ldc), cols);
                                buf[r * NR..r * NR + cols].copy_from_slice(src);
                            }
                        }
                        tile(rows, kc, a, k, b, NR, buf.as_mut_ptr(), NR, k0 == 0);
                        for r in 0..rows {
                            let dst = std::slice::from_raw_parts_mut(c.add(r * ldc), cols);
                            dst.copy_from_slice(&buf[r * NR..r * NR + cols]);
                        }
                    }
                }
            }
        }
    }
}

/// `c ← a · b` for `a` `[m, k]` (row stride `lda`) and `b` `[k, n]` (row stride `ldb`),
/// on the calling thread, each output one FMA chain over `k` in order: attention's
/// small per-head products, which BLAS ran at a fraction of this speed (each call
/// zeroed its output and copied its operands). `n` is rounded up to whole panels of 16
/// when `b` is read.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`available`]); `a` addresses `m` rows of `k` floats,
/// `b` `k` rows of at least `n.next_multiple_of(16)` floats, `c` `m` rows of `n`.
pub(crate) unsafe fn gemm_nn(
    (m, n, k): (usize, usize, usize),
    (a, lda): (*const f32, usize),
    (b, ldb): (*const f32, usize),
    (c, ldc): (*mut f32, usize),
) {
    if k == 0 {
        for i in 0..m {
            std::ptr::write_bytes(c.add(i * ldc), 0, n);
        }
        return;
    }
    for j0 in (0..n).step_by(NR) {
        let cols = NR.min(n - j0);
        for i in (0..m).step_by(MR) {
            let rows = MR.min(m - i);
            let (ai, bj, ci) = (a.add(i * lda), b.add(j0), c.add(i * ldc + j0));
            if cols == NR {
                tile(rows, k, ai, lda, bj, ldb, ci, ldc, true);
            } else {
                let mut buf = [0f32; MR * NR];
                tile(rows, k, ai, lda, bj, ldb, buf.as_mut_ptr(), NR, true);
                for r in 0..rows {
                    std::ptr::copy_nonoverlapping(buf.as_ptr().add(r * NR), ci.add(r * ldc), cols);
                }
            }
        }
    }
}

/// One tile of `rows ≤ MR` rows × 16 columns over `kc` steps of `k`.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`available`]); `a` addresses `rows` rows of at least `kc`
/// floats (stride `lda`), `b` `kc` steps of 16 weights (stride `ldb`: 16 for panels),
/// `c` `rows` rows of 16 floats (stride `ldc`).
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    rows: usize,
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    #[cfg(target_arch = "x86_64")]
    match rows {
        6 => avx2::tile6(kc, a, lda, b, ldb, c, ldc, first),
        5 => avx2::tile5(kc, a, lda, b, ldb, c, ldc, first),
        4 => avx2::tile4(kc, a, lda, b, ldb, c, ldc, first),
        3 => avx2::tile3(kc, a, lda, b, ldb, c, ldc, first),
        2 => avx2::tile2(kc, a, lda, b, ldb, c, ldc, first),
        1 => avx2::tile1(kc, a, lda, b, ldb, c, ldc, first),
        _ => unreachable!("tiles have 1 to {MR} rows"),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, kc, a, lda, b, ldb, c, ldc, first);
        unreachable!("no kernel is compiled for this architecture")
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// A tile of as many rows as indices given: per step of `k`, the panel's 16 weights
    /// are loaded once and each row's `x` is broadcast into two FMAs. Written out row by
    /// row by the macro, not as a loop over rows, so that the accumulators live in
    /// registers at every optimisation level: the tests' build (`opt-level = 1`) does
    /// not unroll such loops, and kept them in memory at a seventh of the speed.
    macro_rules! tile {
        ($name:ident: $($i:literal $lo:ident $hi:ident),+) => {
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn $name(
                kc: usize,
                a: *const f32,
                lda: usize,
                b: *const f32,
                ldb: usize,
                c: *mut f32,
                ldc: usize,
                first: bool,
            ) {
                $(
                    let mut $lo = _mm256_setzero_ps();
                    let mut $hi = _mm256_setzero_ps();
                )+
                if !first {
                    $(
                        $lo = _mm256_loadu_ps(c.add($i * ldc));
                        $hi = _mm256_loadu_ps(c.add($i * ldc + 8));
                    )+
                }
                let mut bk = b;
                let mut ak = a;
                for _ in 0..kc {
                    let b0 = _mm256_loadu_ps(bk);
                    let b1 = _mm256_loadu_ps(bk.add(8));
                    $(
                        let ai = _mm256_broadcast_ss(&*ak.add($i * lda));
                        $lo = _mm256_fmadd_ps(ai, b0, $lo);
                        $hi = _mm256_fmadd_ps(ai, b1, $hi);
                    )+
                    bk = bk.add(ldb);
                    ak = ak.add(1);
                }
                $(
                    _mm256_storeu_ps(c.add($i * ldc), $lo);
                    _mm256_storeu_ps(c.add($i * ldc + 8), $hi);
                )+
            }
        };
    }

    tile!(tile6: 0 l0 h0, 1 l1 h1, 2 l2 h2, 3 l3 h3, 4 l4 h4, 5 l5 h5);
    tile!(tile5: 0 l0 h0, 1 l1 h1, 2 l2 h2, 3 l3 h3, 4 l4 h4);
    tile!(tile4: 0 l0 h0, 1 l1 h1, 2 l2 h2, 3 l3 h3);
    tile!(tile3: 0 l0 h0, 1 l1 h1, 2 l2 h2);
    tile!(tile2: 0 l0 h0, 1 l1 h1);
    tile!(tile1: 0 l0 h0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Each output must be exactly the fused multiply-add chain over `k` in order, for
    /// every row count (tiles of 1 to 6 rows, several row blocks), a last partial panel,
    /// and depths across several passes: so no row's bits depend on its neighbours.
    #[test]
    fn every_output_is_one_ordered_fma_chain() {
        #[cfg(target_arch = "x86_64")]
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            eprintln!("no AVX2 + FMA here: the kernel does not run");
            return;
        }
        #[cfg(not(target_arch = "x86_64"))]
        return;
        for (m, n, k) in [
            (1, 16, 1),
            (5, 17, 9),
            (13, 40, 100),
            (200, 35, 64),
            (7, 48, KC + 5),
            (3, 1, 2 * KC + 1),
        ] {
            let x = values(m * k, 1 + m as u64);
            let w = values(n * k, 2 + n as u64);
            let panels = Panels::pack(&w, n, k);
            let mut out = vec![f32::NAN; m * n];
            // SAFETY: out holds m × n floats.
            unsafe { product(&x, m, &panels, OutPtr(out.as_mut_ptr())) };
            for i in 0..m {
                for j in 0..n {
                    let want = (0..k).fold(0f32, |s, kk| x[i * k + kk].mul_add(w[j * k + kk], s));
                    assert_eq!(
                        out[i * n + j].to_bits(),
                        want.to_bits(),
                        "{m}×{n}×{k} at ({i}, {j})"
                    );
                }
            }
        }
    }

    /// Scores straight from `x · wᵀ` are those of the formed product: the target's
    /// log-probability to 1e-6 and the same first argmax, for row counts across several
    /// blocks and threads, a vocabulary that ends in a partial panel, depths past one
    /// pass, and targets in the first, a middle and the last column; a NaN or infinite
    /// logit gives `None`.
    #[test]
    fn target_log_probs_match_the_formed_products() {
        if !available() {
            eprintln!("the kernel does not run here");
            return;
        }
        let dev = candle_core::Device::Cpu;
        for (m, n, k) in [
            (1, 16, 8),
            (7, 1000, 40),
            (250, 3 * SCORE_COLS + 5, 64),
            (13, 300, KC + 3),
        ] {
            let x = values(m * k, 11 + m as u64);
            let mut w = values(n * k, 12 + n as u64);
            // Row 0's maximum is column n/2, tied with the last column (same weights).
            for kk in 0..k {
                w[(n / 2) * k + kk] = x[kk] * 4.0;
                w[(n - 1) * k + kk] = x[kk] * 4.0;
            }
            let panels = Panels::pack(&w, n, k);
            let mut out = vec![0f32; m * n];
            // SAFETY: out holds m × n floats.
            unsafe { product(&x, m, &panels, OutPtr(out.as_mut_ptr())) };
            let argmax = |i: usize| {
                let row = &out[i * n..][..n];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                row.iter().position(|&v| v == max).unwrap()
            };
            assert_eq!(argmax(0), n / 2, "{m}×{n}×{k}: row 0's maximum");
            // Row 0 asks for the tied later column: not the first maximum.
            let targets: Vec<u32> = (0..m)
                .map(|i| match i {
                    0 => n - 1,
                    _ => [0, n / 2, n - 1, argmax(i)][i % 4],
                } as u32)
                .collect();
            let xt = Tensor::from_slice(&x, (m, k), &dev).unwrap();
            let got = target_log_probs(&xt, &panels, &targets).unwrap().unwrap();
            for (i, (&(lp, greedy), &t)) in got.iter().zip(&targets).enumerate() {
                let row = &out[i * n..][..n];
                let (max, lse) = crate::model::softmax::max_logsumexp(row);
                let want = (row[t as usize] - max) as f64 - lse;
                let first = row.iter().position(|&v| v == max).unwrap();
                assert!(
                    (lp - want).abs() < 1e-6,
                    "{m}×{n}×{k} row {i}: {lp} vs {want}"
                );
                assert_eq!(greedy, first == t as usize, "{m}×{n}×{k} row {i}");
            }
            assert!(!got[0].1, "{m}×{n}×{k}: a tie went to the later column");
            assert!(
                m < 4 || got[3].1,
                "{m}×{n}×{k}: row 3's argmax was not greedy"
            );
        }
        let (m, n, k) = (9, 40, 16);
        let mut x = values(m * k, 3);
        x[5 * k + 2] = f32::INFINITY;
        let xt = Tensor::from_slice(&x, (m, k), &dev).unwrap();
        let panels = Panels::pack(&values(n * k, 4), n, k);
        assert!(target_log_probs(&xt, &panels, &[0; 9]).unwrap().is_none());
        assert!(target_log_probs(&xt, &panels, &[40; 9]).is_err());
    }

    /// Through `ops::linear`: a model's [`Weight`] packs once and gives the bits a plain
    /// tensor gives (packed per call), within f32 rounding of candle's matmul; a product
    /// autograd tracks keeps candle's matmul, so its gradient flows.
    #[test]
    fn weights_pack_once_and_autograd_keeps_candles_matmul() {
        use crate::model::ops::linear;
        let dev = candle_core::Device::Cpu;
        let (m, n, k) = (23, 50, 70);
        let x = Tensor::from_vec(values(m * k, 5), (m, k), &dev).unwrap();
        let wt = Tensor::from_vec(values(n * k, 6), (n, k), &dev).unwrap();
        let w = Weight::new(wt.clone());
        let by_weight = linear(&x, &w, None).unwrap();
        let by_tensor = linear(&x, &wt, None).unwrap();
        let by_candle = x.matmul(&wt.t().unwrap()).unwrap();
        let diff = crate::model::ops::tests::max_diff(&by_weight, &by_candle);
        assert!(diff < 1e-5, "packed vs candle: {diff}");
        assert_eq!(
            by_weight.to_vec2::<f32>().unwrap(),
            by_tensor.to_vec2::<f32>().unwrap()
        );
        if available() {
            let first = w.panels().unwrap().unwrap();
            let again = w.panels().unwrap().unwrap();
            assert!(Arc::ptr_eq(&first, &again), "packed twice");
        }
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let y = linear(var.as_tensor(), &w, None).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(var.as_tensor()).expect("a gradient reaches x");
        // d(sum x·wᵀ)/dx = column sums of w, for every row.
        let want = wt
            .sum(0)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .broadcast_as((m, k))
            .unwrap();
        assert!(crate::model::ops::tests::max_diff(g, &want) < 1e-4);
    }

    /// Scoring through an unembedding of SmolLM2's shape (49,152 × 576) at 640 rows (a
    /// perplexity batch; SCORE_M=... for others), on the pool's threads: the formed
    /// product then a normaliser per row, against [`target_log_probs`].
    /// `cargo test --release --lib packed::tests::score_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn score_speed() {
        if !available() {
            eprintln!("the kernel does not run here");
            return;
        }
        let (n, k) = (49_152, 576);
        let m: usize = std::env::var("SCORE_M")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(640);
        let w = Panels::pack(&values(n * k, 1), n, k);
        let x = values(m * k, 2);
        let xt = Tensor::from_slice(&x, (m, k), &candle_core::Device::Cpu).unwrap();
        let targets: Vec<u32> = (0..m).map(|i| (i * 7919 % n) as u32).collect();
        let mut out = vec![0f32; m * n];
        use rayon::prelude::*;
        for _ in 0..3 {
            let formed = gflops(m, n, k, || {
                // SAFETY: out holds m × n floats.
                unsafe { product(&x, m, &w, OutPtr(out.as_mut_ptr())) };
                let s: f64 = out
                    .par_chunks(n)
                    .map(|r| crate::model::softmax::max_logsumexp(r).1)
                    .sum();
                assert!(s.is_finite());
            });
            let fused = gflops(m, n, k, || {
                target_log_probs(&xt, &w, &targets).unwrap().unwrap();
            });
            eprintln!("m {m}: formed + normaliser {formed:5.1} GFLOP/s, fused {fused:5.1}");
        }
    }

    fn gflops(m: usize, n: usize, k: usize, mut f: impl FnMut()) -> f64 {
        f();
        let reps = ((4e9 / (2.0 * (m * n * k) as f64)).ceil() as usize).max(3);
        let t = std::time::Instant::now();
        for _ in 0..reps {
            f();
        }
        2.0 * (m * n * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9
    }

    /// SmolLM2's shapes on one thread (`SPEED_THREADS=2` for two; `SPEED_ROWS=640,…`
    /// for other row counts than 10, 40, 120 and 512), weights read from memory as a
    /// model's layers are (a fresh layer's weights each call), against OpenBLAS on the
    /// unpacked weights where it is loaded.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn speed() {
        if !available() {
            eprintln!("the kernel does not run here");
            return;
        }
        // One thread unless SPEED_THREADS says otherwise.
        let threads: usize = std::env::var("SPEED_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            // SPEED_ROWS=640,... for other batch sizes.
            let rows: Vec<usize> = std::env::var("SPEED_ROWS")
                .ok()
                .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
                .unwrap_or_else(|| vec![10, 40, 120, 512]);
            for (n, k) in [
                (576, 576),
                (192, 576),
                (1536, 576),
                (576, 1536),
                (8192, 576),
            ] {
                let layers = (64 << 20) / (n * k * 4) + 2;
                let ws: Vec<Vec<f32>> = (0..layers).map(|l| values(n * k, l as u64)).collect();
                let packed: Vec<Panels> = ws.iter().map(|w| Panels::pack(w, n, k)).collect();
                let dev = candle_core::Device::Cpu;
                let wt: Vec<Tensor> = ws
                    .iter()
                    .map(|w| Tensor::from_slice(w, (n, k), &dev).unwrap())
                    .collect();
                for &m in &rows {
                    let x = values(m * k, 9);
                    let mut out = vec![0f32; m * n];
                    let mut l = 0;
                    let ours = gflops(m, n, k, || {
                        l = (l + 1) % layers;
                        // SAFETY: out holds m × n floats.
                        unsafe { product(&x, m, &packed[l], OutPtr(out.as_mut_ptr())) }
                    });
                    let xt = Tensor::from_slice(&x, (m, k), &dev).unwrap();
                    let theirs = if super::super::blas::available() {
                        gflops(m, n, k, || {
                            l = (l + 1) % layers;
                            super::super::blas::linear_if_loaded(&xt, &wt[l]).unwrap();
                        })
                    } else {
                        f64::NAN
                    };
                    eprintln!(
                        "m {m:4} n {n:5} k {k:5}: packed {ours:5.1} GFLOP/s, OpenBLAS {theirs:5.1}"
                    );
                }
            }
            // The gated MLP's fused gate/up product on SmolLM2's shape, counted as the
            // two products it replaces.
            let (n, k) = (1536, 576);
            let layers = (64 << 20) / (2 * n * k * 4) + 2;
            let gates: Vec<Panels> = (0..layers)
                .map(|l| Panels::pack(&values(n * k, 2 * l as u64), n, k))
                .collect();
            let ups: Vec<Panels> = (0..layers)
                .map(|l| Panels::pack(&values(n * k, 2 * l as u64 + 1), n, k))
                .collect();
            for &m in &rows {
                let xt =
                    Tensor::from_vec(values(m * k, 9), (m, k), &candle_core::Device::Cpu).unwrap();
                let mut l = 0;
                let ours = gflops(m, 2 * n, k, || {
                    l = (l + 1) % layers;
                    silu_gated(&xt, &gates[l], &ups[l]).unwrap().unwrap();
                });
                eprintln!("m {m:4} n 2×{n} k {k:5}: silu-gated {ours:5.1} GFLOP/s");
            }
        });
    }
}
