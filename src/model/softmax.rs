//! Exponentials over long rows without autograd: the log-normaliser of a row of
//! logits, `ln Σ exp(x - max)`, and an in-place softmax (attention scores).
//!
//! Scoring needs the normaliser at every scored position (49k exponentials each on
//! SmolLM2); as a libm `exp` per element it was a tenth of a perplexity run. Here the
//! exponential is a branch-free polynomial that the compiler turns into SIMD, compiled
//! once more for AVX2 + FMA and picked at run time. Partial sums stay short in f32 and
//! are added in f64, so the normaliser is within about 1e-6 of the exact one.

use super::simd::with_avx2;

/// `(max, ln Σ exp(x - max))` over `row`; `row` must be non-empty and finite.
pub fn max_logsumexp(row: &[f32]) -> (f32, f64) {
    with_avx2!(max_logsumexp_body(row: &[f32]) -> (f32, f64))
}

/// `row ← softmax(row)`; `row` must be non-empty, finite or -inf, with a finite maximum.
pub fn softmax_in_place(row: &mut [f32]) {
    with_avx2!(softmax_body(row: &mut [f32]) -> ())
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let max = lane_max(row);
    for x in row.iter_mut() {
        *x = exp_nonpositive(*x - max);
    }
    let inv = (1.0 / blocked_sum(row, |x| x)) as f32;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

const LANES: usize = 16;
/// Elements per f32 partial sum before it is added into the f64 total: each lane sums
/// `BLOCK / LANES` terms of at most 1.
const BLOCK: usize = 512;

#[inline(always)]
fn max_logsumexp_body(row: &[f32]) -> (f32, f64) {
    let max = lane_max(row);
    (max, blocked_sum(row, |x| exp_nonpositive(x - max)).ln())
}

/// The normaliser of a row of logits that arrives in pieces, left to right: the
/// unembedding can then score a position from one block of vocabulary columns at a
/// time, in cache, instead of writing the whole `[positions, vocab]` product to memory
/// and reading it back. Each piece's terms are taken against the largest logit seen so
/// far and the total is rescaled (in f64) when a later piece holds a larger one, so the
/// result is [`max_logsumexp`]'s to about 1e-6, and its bits when one piece holds the row.
#[derive(Clone, Copy, Debug)]
pub struct PiecewiseLogNorm {
    max: f32,
    /// `Σ exp(x - max)` over the pieces so far.
    sum: f64,
    /// Index of the first maximum.
    argmax: usize,
    seen: usize,
    finite: bool,
}

impl Default for PiecewiseLogNorm {
    fn default() -> Self {
        PiecewiseLogNorm {
            max: f32::NEG_INFINITY,
            sum: 0.0,
            argmax: 0,
            seen: 0,
            finite: true,
        }
    }
}

impl PiecewiseLogNorm {
    /// Takes the next `piece` of the row.
    pub fn push(&mut self, piece: &[f32]) {
        let norm = self;
        with_avx2!(push_body(norm: &mut PiecewiseLogNorm, piece: &[f32]) -> ())
    }

    /// `(max, ln Σ exp(x - max), index of the first maximum)` over the pieces taken;
    /// `None` when one of them held an infinity or a NaN, or none held anything.
    pub fn finish(&self) -> Option<(f32, f64, usize)> {
        (self.finite && self.seen > 0 && self.sum.is_finite())
            .then(|| (self.max, self.sum.ln(), self.argmax))
    }
}

#[inline(always)]
fn push_body(norm: &mut PiecewiseLogNorm, piece: &[f32]) {
    if piece.is_empty() || !norm.finite {
        return;
    }
    let hi = lane_max(piece);
    if !hi.is_finite() {
        norm.finite = false;
        return;
    }
    if hi > norm.max {
        norm.sum *= (norm.max as f64 - hi as f64).exp();
        norm.max = hi;
        norm.argmax = norm.seen + piece.iter().position(|&x| x == hi).unwrap_or(0);
    }
    let max = norm.max;
    // `x · 0` is 0 for a finite `x` (so each term keeps its bits) and NaN for an
    // infinity or a NaN, which the lane maximum passes over: the sum carries it.
    norm.sum += blocked_sum(piece, |x| exp_nonpositive(x - max) + x * 0.0);
    norm.seen += piece.len();
}

/// `Σ f(x)` over `row`, in f32 lanes of at most `BLOCK / LANES` terms each, added in f64.
#[inline(always)]
pub(crate) fn blocked_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for block in row.chunks(BLOCK) {
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += f(x);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// The largest element, kept per lane so that the loop vectorises.
#[inline(always)]
fn lane_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// `exp(x)` for `x ≤ 0` within 2 ulp, and 0 from -87 down (the true value, under
/// 1.7e-38, is negligible beside the maximum's term of 1): `x = n·ln2 + r`
/// with `|r| ≤ ln2 / 2`, a degree-6 polynomial for `exp(r)`, and `2^n` built in the
/// exponent bits. No branches and no libm call, so a loop over it vectorises.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients of exp, enough for |r| ≤ 0.35 at f32 precision.
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // `n` read off `t`'s low mantissa bits, where adding ROUND put it (ROUND's ulp is 1):
    // `n as i32` is a saturating cast, which kept the loop from vectorising.
    let n_int = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let y = p * f32::from_bits(((n_int + 127) as u32) << 23);
    // A select, not a branch: masked attention scores (-inf) get exactly 0.
    if x <= -87.0 {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In pieces of any sizes, the normaliser is the whole row's to 1e-6 (its bits in
    /// one piece), the argmax is the first maximum, and an infinity or a NaN anywhere
    /// gives `None`.
    #[test]
    fn piecewise_normaliser_matches_the_whole_rows() {
        let len = 5_000;
        // Rising then falling, with ties of the maximum, so that later pieces raise it.
        let row: Vec<f32> = (0..len)
            .map(|i| ((i * 7919 % 1009) as f32) * 0.02 - 9.0 + (i as f32 * 0.004).sin() * 5.0)
            .collect();
        let (max, lse) = max_logsumexp(&row);
        let first = row.iter().position(|&x| x == max).unwrap();
        for sizes in [vec![len], vec![1, 15, 16, 999], vec![256], vec![4096, 3]] {
            let mut norm = PiecewiseLogNorm::default();
            let (mut at, mut s) = (0, 0);
            while at < len {
                let n = sizes[s % sizes.len()].min(len - at);
                norm.push(&row[at..at + n]);
                (at, s) = (at + n, s + 1);
            }
            let (m, l, arg) = norm.finish().unwrap();
            assert_eq!((m, arg), (max, first), "pieces {sizes:?}");
            assert!((l - lse).abs() < 1e-6, "pieces {sizes:?}: {l} vs {lse}");
            if sizes == [len] {
                assert_eq!(l.to_bits(), lse.to_bits());
            }
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut spoilt = row.clone();
            spoilt[len - 10] = bad;
            let mut norm = PiecewiseLogNorm::default();
            norm.push(&spoilt[..len / 2]);
            norm.push(&spoilt[len / 2..]);
            assert!(norm.finish().is_none(), "{bad} passed");
        }
        assert!(PiecewiseLogNorm::default().finish().is_none());
    }

    #[test]
    fn exp_matches_libm_over_its_range() {
        let mut worst = 0f64;
        let mut x = -86.9f32;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_3;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-200.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softmax_matches_the_f64_definition_and_zeroes_masked_entries() {
        for len in [300usize, 17, 1] {
            let mut row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32) * 0.3 - 12.0)
                .collect();
            if len > 1 {
                row[len / 2] = f32::NEG_INFINITY;
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
            let want: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp() / z).collect();
            softmax_in_place(&mut row);
            for (g, w) in row.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-6 * w.max(1e-3), "{g} vs {w}");
            }
            if len > 1 {
                assert_eq!(row[len / 2], 0.0);
            }
        }
    }

    #[test]
    fn logsumexp_matches_the_f64_definition() {
        // A vocabulary-sized row with a spread like real logits, and a short odd one.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 30.0 - 20.0
        };
        for len in [49_152usize, 37, 1] {
            let row: Vec<f32> = (0..len).map(|_| next()).collect();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let want: f64 = row
                .iter()
                .map(|&x| ((x - max) as f64).exp())
                .sum::<f64>()
                .ln();
            let (m, got) = max_logsumexp(&row);
            assert_eq!(m, max);
            assert!((got - want).abs() < 1e-6, "{len}: {got} vs {want}");
            assert_eq!(max_logsumexp_body(&row).0, max);
            assert!((max_logsumexp_body(&row).1 - want).abs() < 1e-6);
        }
    }
}
