//! Scaled dot-product attention on the CPU without autograd, one task per (row, head).
//!
//! The composed form (repeat the key/value heads, `q·kᵀ` as one batched matmul, add the
//! mask, softmax, `·v`, transpose back) copies every operand at least once and runs the
//! per-head products one after another inside candle's matmul. Here each (batch row,
//! query head) is a rayon task: two single-threaded products that read the query rows
//! and the shared value head in place and write the head's output straight into its
//! columns of `[b, t, heads, dh]`, with the mask added and the softmax taken in between
//! on a scratch buffer. The products run on the packed kernel's tile
//! (`packed::gemm_nn`, the task's keys transposed once) where it runs and heads are
//! whole panels of 16, else through BLAS: BLAS zeroed and copied its operands on each
//! of these small calls, 3.8% of a perplexity run's CPU time against 1.3% for its
//! arithmetic. Used only where nothing needs the pattern itself (no
//! hook at `attn.hook_pattern`) and no gradient flows; both forms compute the same
//! function (tested below).

use candle_core::{DType, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use super::blas::{self, OutPtr};
use super::packed;
use super::softmax::softmax_in_place;

fn elements<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    blas::cpu_elements("attention", storage, layout)
}

/// Queries per block: each block's products cover only the keys it can see.
const QUERY_BLOCK: usize = 32;

/// Query positions `[i0, i1)` of block `qb` of `t`.
fn block_rows(qb: usize, t: usize) -> (usize, usize) {
    (qb * QUERY_BLOCK, ((qb + 1) * QUERY_BLOCK).min(t))
}

/// The columns `[lo, hi)` outside which every row of `rows` (each `total` wide) is
/// masked (-inf). A block whose rows are all masked everywhere keeps every column, so
/// that it gives what the unblocked form gives.
fn visible_span(rows: &[f32], total: usize) -> (usize, usize) {
    let (mut lo, mut hi) = (total, 0);
    for r in rows.chunks_exact(total) {
        if let Some(first) = r.iter().position(|x| *x != f32::NEG_INFINITY) {
            let last = r
                .iter()
                .rposition(|x| *x != f32::NEG_INFINITY)
                .unwrap_or(first);
            lo = lo.min(first);
            hi = hi.max(last + 1);
        }
    }
    if lo >= hi {
        (0, total)
    } else {
        (lo, hi)
    }
}

/// Whether [`attend`] runs for these operands: f32 on the CPU, outside autograd, with
/// BLAS present.
pub fn applies(ts: &[&Tensor]) -> bool {
    blas::available()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// `softmax(scale · q·kᵀ + mask) · v` for `q` `[b, t, heads, dh]`, `k`, `v`
/// `[b, kv_heads, total, dh]` (each key/value head serving `heads / kv_heads`
/// consecutive query heads) and an additive `mask` `[t, total]` or `[b, 1, t, total]`.
/// Returns `[b, t, heads, dh]`. Call only where [`applies`] holds.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (b, t, h, dh) = q.dims4()?;
    let (kb, kvh, total, kdh) = k.dims4()?;
    if kb != b || kdh != dh || v.dims4()? != (b, kvh, total, dh) || kvh == 0 || h % kvh != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit together",
            q.shape(),
            k.shape(),
            v.shape()
        );
    }
    let per_row_mask = match mask.map(|m| m.dims()) {
        None => false,
        Some([mt, mtot]) if (*mt, *mtot) == (t, total) => false,
        Some([mb, 1, mt, mtot]) if (*mb, *mt, *mtot) == (b, t, total) => true,
        Some(_) => candle_core::bail!(
            "attention: mask {:?} for {b} rows of {t} queries over {total} keys",
            mask.map(|m| m.shape().clone())
        ),
    };
    let mask = mask
        .map(|m| m.to_dtype(DType::F32)?.contiguous())
        .transpose()?;
    let mask_guard = mask.as_ref().map(|m| m.storage_and_layout());
    let ms = match &mask_guard {
        Some((g, l)) => Some(elements(g, l)?),
        None => None,
    };
    let rows: Vec<Row> = (0..b)
        .map(|r| Row {
            q_at: r * t,
            len: t,
            kv_at: r * kvh * total,
            total,
        })
        .collect();
    let mask = match ms {
        None => Mask::None,
        Some(m) => Mask::Given { m, per_row_mask },
    };
    let out = with_operands(q, k, v, kvh, |o| run(o, &rows, mask, scale as f32))?;
    Tensor::from_vec(out, (b, t, h, dh), q.device())
}

/// [`attend`] for sequences laid end to end without padding: `q` `[1, n, heads, dh]`,
/// `k`, `v` `[1, kv_heads, n, dh]`, sequence `i` at positions `segments[i]` (start,
/// length; together covering `0..n` in order), each attending causally within itself.
/// Gives each sequence what [`attend`] gives it as a row of a right-padded batch under
/// a causal mask, to f32 rounding: a padded row's last query block spans keys up to the
/// batch's width, so its softmax also sums the padding's zero probabilities, in other
/// lanes (tested below). Here a sequence's result does not depend on its neighbours.
pub fn attend_segments(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &[(usize, usize)],
    scale: f64,
) -> Result<Tensor> {
    let (b, n, h, dh) = q.dims4()?;
    let (kb, kvh, kn, kdh) = k.dims4()?;
    let tiles = segments
        .iter()
        .try_fold(0, |at, &(s, l)| (s == at).then_some(s + l));
    if b != 1
        || kb != 1
        || kn != n
        || kdh != dh
        || v.dims4()? != (1, kvh, n, dh)
        || kvh == 0
        || h % kvh != 0
        || tiles != Some(n)
    {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} and {} segments do not fit together",
            q.shape(),
            k.shape(),
            v.shape(),
            segments.len()
        );
    }
    let rows: Vec<Row> = segments
        .iter()
        .map(|&(start, len)| Row {
            q_at: start,
            len,
            kv_at: start,
            total: len,
        })
        .collect();
    let causal = Mask::Causal { n };
    let out = with_operands(q, k, v, kvh, |o| run(o, &rows, causal, scale as f32))?;
    Tensor::from_vec(out, (1, n, h, dh), q.device())
}

/// `f` on the elements of `q` `[.., heads, dh]`, `k` and `v` (made contiguous), with
/// `kv_heads` key/value heads.
fn with_operands(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_heads: usize,
    f: impl FnOnce(Operands) -> Vec<f32>,
) -> Result<Vec<f32>> {
    let (h, dh) = (q.dim(2)?, q.dim(3)?);
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (qg, ql) = q.storage_and_layout();
    let (kg, kl) = k.storage_and_layout();
    let (vg, vl) = v.storage_and_layout();
    let (qs, ks, vs) = (elements(&qg, ql)?, elements(&kg, kl)?, elements(&vg, vl)?);
    Ok(f(Operands {
        qs,
        ks,
        vs,
        h,
        kvh: kv_heads,
        dh,
    }))
}

/// The flattened operands: `qs` `[.., heads, dh]` by query position; `ks`, `vs` by key
/// position, the key/value heads' blocks as [`Row::kv_at`] says.
struct Operands<'a> {
    qs: &'a [f32],
    ks: &'a [f32],
    vs: &'a [f32],
    h: usize,
    kvh: usize,
    dh: usize,
}

/// One attending sequence: its `len` queries from query position `q_at`, its `total`
/// keys from key position `kv_at` of key/value head 0 (head `j`'s are `j · stride`
/// positions on, where the stride is the keys per head block: `total` for a padded
/// batch's row, `n` for segments).
struct Row {
    q_at: usize,
    len: usize,
    kv_at: usize,
    total: usize,
}

/// What each query may see.
enum Mask<'a> {
    None,
    /// An additive mask `[t, total]`, or per row `[b, 1, t, total]`.
    Given {
        m: &'a [f32],
        per_row_mask: bool,
    },
    /// Keys up to the query's own position in its sequence, with `n` keys per head
    /// block.
    Causal {
        n: usize,
    },
}

/// The (row, head) tasks over `rows`; the output `[.., heads, dh]` by query position.
fn run(o: Operands, rows: &[Row], mask: Mask, scale: f32) -> Vec<f32> {
    let Operands {
        qs,
        ks,
        vs,
        h,
        kvh,
        dh,
    } = o;
    let rep = h / kvh;
    let n_q: usize = rows.iter().map(|r| r.len).sum();
    let widest = rows.iter().map(|r| r.total).max().unwrap_or(0);
    let longest = rows.iter().map(|r| r.len).max().unwrap_or(0);
    // Keys per key/value head block.
    let head_stride = match mask {
        Mask::Causal { n } => n,
        _ => widest,
    };
    // The keys each block of queries can see: with a causal mask the first block's
    // queries see only the first keys, so a block's products and softmax cover just
    // the columns where some query of the block has a finite mask entry (the rest would
    // get probability exactly 0). Halves a prefill's attention work.
    let blocks = longest.div_ceil(QUERY_BLOCK);
    let spans: Vec<(usize, usize)> = match mask {
        Mask::None => vec![(0, widest); blocks],
        // Per row, below.
        Mask::Causal { .. } => Vec::new(),
        Mask::Given { m, per_row_mask } => {
            let (t, total) = (longest, widest);
            (0..if per_row_mask { rows.len() } else { 1 } * blocks)
                .map(|rb| {
                    let (r, qb) = (rb / blocks, rb % blocks);
                    let (i0, i1) = block_rows(qb, t);
                    visible_span(&m[(r * t + i0) * total..(r * t + i1) * total], total)
                })
                .collect()
        }
    };
    let mut out: Vec<f32> = Vec::with_capacity(n_q * h * dh);
    let out_ptr = OutPtr(out.as_mut_ptr());
    // The packed kernel's tile where it runs (heads of whole 16-float panels), else BLAS.
    let own = packed::available() && dh % 16 == 0;
    // This head's keys transposed, `[dh, total + 16]`: the tile reads the keys of a
    // block in whole panels of 16 from `lo`, so each row has room past `total`.
    let kt_stride = widest + 16;
    (0..rows.len() * h).into_par_iter().for_each_init(
        || {
            (
                vec![0f32; QUERY_BLOCK.min(longest) * widest],
                Vec::new(),
                None,
            )
        },
        |(scores, kt, holds), bh| {
            let (r, head) = (bh / h, bh % h);
            let row = &rows[r];
            let (t, total) = (row.len, row.total);
            let kv = ((head / rep) * head_stride + row.kv_at) * dh;
            // A thread takes consecutive tasks, so the query heads that share a key
            // head mostly follow each other: their keys are transposed once.
            if own && *holds != Some((kv, total)) {
                // One size for every task of a call: zeroed once, when first made, and
                // overwritten but for the columns past `total`, which the tile reads
                // and no output uses.
                kt.resize(dh * kt_stride, 0f32);
                for (j, key) in ks[kv..kv + total * dh].chunks_exact(dh).enumerate() {
                    for (d, &x) in key.iter().enumerate() {
                        kt[d * kt_stride + j] = x;
                    }
                }
                *holds = Some((kv, total));
            }
            for qb in 0..t.div_ceil(QUERY_BLOCK) {
                let (i0, i1) = block_rows(qb, t);
                let (lo, hi) = match mask {
                    Mask::Causal { .. } => (0, i1),
                    Mask::Given {
                        per_row_mask: true, ..
                    } => spans[r * blocks + qb],
                    _ => spans[qb],
                };
                let (n_q, n_k) = (i1 - i0, hi - lo);
                let q0 = ((row.q_at + i0) * h + head) * dh;
                let scores = &mut scores[..n_q * n_k];
                // SAFETY: q holds h·dh floats per query position (row stride h·dh from
                // q0); this head's keys and values are `total` rows of dh from kv (keys
                // lo..hi used); kt is those keys transposed with rows of kt_stride;
                // scores holds n_q×n_k; and this task alone writes out's columns
                // head·dh.. of the row's positions i0..i1.
                unsafe {
                    if own {
                        packed::gemm_nn(
                            (n_q, n_k, dh),
                            (qs.as_ptr().add(q0), h * dh),
                            (kt.as_ptr().add(lo), kt_stride),
                            (scores.as_mut_ptr(), n_k),
                        );
                    } else {
                        blas::gemm(
                            true,
                            (n_q, n_k, dh),
                            1.0,
                            (qs.as_ptr().add(q0), h * dh),
                            (ks.as_ptr().add(kv + lo * dh), dh),
                            (scores.as_mut_ptr(), n_k),
                        );
                    }
                }
                for (i, s) in scores.chunks_exact_mut(n_k).enumerate() {
                    match mask {
                        Mask::Given { m, per_row_mask } => {
                            let mr = if per_row_mask { r } else { 0 };
                            let m0 = (mr * t + i0 + i) * total;
                            for (x, &a) in s.iter_mut().zip(&m[m0 + lo..m0 + hi]) {
                                *x = *x * scale + a;
                            }
                        }
                        // The additions of a causal mask's entries (0 up to the query,
                        // -inf after), as the padded form makes them.
                        Mask::Causal { .. } => {
                            let seen = i0 + i + 1 - lo;
                            for (j, x) in s.iter_mut().enumerate() {
                                let a = if j < seen { 0.0 } else { f32::NEG_INFINITY };
                                *x = *x * scale + a;
                            }
                        }
                        Mask::None => s.iter_mut().for_each(|x| *x *= scale),
                    }
                    softmax_in_place(s);
                }
                // SAFETY: as above; v's head block is total×dh.
                unsafe {
                    if own {
                        packed::gemm_nn(
                            (n_q, dh, n_k),
                            (scores.as_ptr(), n_k),
                            (vs.as_ptr().add(kv + lo * dh), dh),
                            (out_ptr.at(q0), h * dh),
                        );
                    } else {
                        blas::gemm(
                            false,
                            (n_q, dh, n_k),
                            1.0,
                            (scores.as_ptr(), n_k),
                            (vs.as_ptr().add(kv + lo * dh), dh),
                            (out_ptr.at(q0), h * dh),
                        );
                    }
                }
            }
        },
    );
    // SAFETY: the tasks wrote every (query position, head) block of dh elements.
    unsafe { out.set_len(n_q * h * dh) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::{self, tests::max_diff};
    use candle_core::Device;

    /// The composed form, as the models run it when a hook needs the pattern.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Tensor {
        let rep = q.dim(2).unwrap() / k.dim(1).unwrap();
        let q = q.transpose(1, 2).unwrap().contiguous().unwrap();
        let k = ops::repeat_kv(k, rep).unwrap().contiguous().unwrap();
        let v = ops::repeat_kv(v, rep).unwrap().contiguous().unwrap();
        let mut s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        if let Some(m) = mask {
            s = s.broadcast_add(m).unwrap();
        }
        let p = ops::softmax_last_dim(&s).unwrap();
        p.matmul(&v).unwrap().transpose(1, 2).unwrap()
    }

    /// Short and long query runs (one block, and several blocks whose key spans
    /// differ), with no mask, a causal mask after cached positions, and left padding
    /// with a sliding window (rows whose spans start late).
    #[test]
    fn fused_attention_matches_the_composed_form() {
        let dev = Device::Cpu;
        // Heads of 8 go through BLAS; heads of whole 16-float panels through the packed
        // kernel's tile where it runs, including blocks of keys that end mid-panel.
        for (b, t, h, kvh, dh, offset) in [
            (3, 5, 6, 2, 8, 4),
            (2, 70, 4, 2, 8, 3),
            (3, 70, 6, 2, 64, 3),
            (2, 37, 2, 1, 16, 0),
        ] {
            let total = offset + t;
            let q = Tensor::randn(0f32, 1.0, (b, t, h, dh), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, kvh, total, dh), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, kvh, total, dh), &dev).unwrap();
            if !applies(&[&q, &k, &v]) {
                eprintln!("no OpenBLAS on this machine: the composed form runs");
                return;
            }
            let causal = ops::causal_mask(t, offset, DType::F32, &dev).unwrap();
            let pads = [0, 2, 5][..b].to_vec();
            let padded =
                ops::padded_causal_mask(t, offset, &pads, Some(6), DType::F32, &dev).unwrap();
            for mask in [None, Some(&causal), Some(&padded)] {
                let got = attend(&q, &k, &v, mask, 0.3).unwrap();
                let want = composed(&q, &k, &v, mask, 0.3);
                assert_eq!(got.dims(), want.dims());
                assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
            }
            let bad = Tensor::zeros((t, total + 1), DType::F32, &dev).unwrap();
            assert!(attend(&q, &k, &v, Some(&bad), 0.3).is_err());
        }
    }

    /// Sequences laid end to end give what each gets as a row of a right-padded batch
    /// under a causal mask, to rounding (lengths cross query blocks and 16-key panels).
    #[test]
    fn segments_give_what_padded_rows_give() {
        let dev = Device::Cpu;
        let lens = [5usize, 37, 70, 1, 33];
        let width = *lens.iter().max().unwrap();
        let n: usize = lens.iter().sum();
        for (h, kvh, dh) in [(6, 2, 64), (4, 2, 8)] {
            let q = Tensor::randn(0f32, 1.0, (lens.len(), width, h, dh), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (lens.len(), kvh, width, dh), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (lens.len(), kvh, width, dh), &dev).unwrap();
            if !applies(&[&q, &k, &v]) {
                eprintln!("no OpenBLAS on this machine: the composed form runs");
                return;
            }
            let causal = ops::causal_mask(width, 0, DType::F32, &dev).unwrap();
            let padded = attend(&q, &k, &v, Some(&causal), 0.3).unwrap();
            // The real positions of each row, end to end.
            let cat = |x: &Tensor, dim: usize| {
                let parts: Vec<Tensor> = lens
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| x.narrow(0, i, 1).unwrap().narrow(dim, 0, l).unwrap())
                    .collect();
                Tensor::cat(&parts, dim).unwrap()
            };
            let mut segments = Vec::new();
            let mut at = 0;
            for &l in &lens {
                segments.push((at, l));
                at += l;
            }
            let got =
                attend_segments(&cat(&q, 1), &cat(&k, 2), &cat(&v, 2), &segments, 0.3).unwrap();
            assert_eq!(got.dims(), &[1, n, h, dh]);
            let want = cat(&padded, 1);
            assert!(max_diff(&got, &want) < 1e-6, "{}", max_diff(&got, &want));
            let gaps = [(0, 5), (6, 37)];
            assert!(attend_segments(&cat(&q, 1), &cat(&k, 2), &cat(&v, 2), &gaps, 0.3).is_err());
        }
    }

    #[test]
    fn a_block_sees_the_union_of_its_rows_spans() {
        let ninf = f32::NEG_INFINITY;
        let rows = [ninf, 0.0, ninf, ninf, ninf, ninf, 0.0, 0.0];
        assert_eq!(visible_span(&rows, 4), (1, 4));
        // Every entry masked: all columns, as the unblocked form would use.
        assert_eq!(visible_span(&[ninf; 4], 4), (0, 4));
    }
}
