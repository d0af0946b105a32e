//! f32 linear layers on the CPU through OpenBLAS's `cblas_sgemm` when the machine has
//! it (Debian: `libopenblas0`), loaded at run time so that building Scalpel never needs
//! it; `SCALPEL_BLAS=off` (or a machine without it) runs candle's own matmul.
//!
//! Fits must not depend on which library a machine happens to have: the breaker's
//! training starts where its loss has a gradient (see `intervene::fit`), and the same fit
//! under either matmul agrees to four digits (`tests/intervene.rs` runs under both in CI:
//! `.ci/run` installs OpenBLAS, and the unit test here compares the two paths).
//!
//! Why: every workload here is dominated by the model's projections, and candle's CPU
//! matmul (the `gemm` crate) reached about a third of OpenBLAS's AVX-512 kernels on
//! this project's machines (`cargo xtask bench` records both libraries' throughput).
//!
//! OpenBLAS picks its kernels from the CPU model when it loads, and on CPUs it does not
//! know (virtual machines that report a generic model among them) it falls back to the
//! oldest x86-64 kernels, slower than candle. Unless the user chose a core type
//! (`OPENBLAS_CORETYPE`), we check the instruction sets ourselves and, if OpenBLAS
//! chose kernels below them, re-initialise it with the matching core type.

use std::sync::OnceLock;

use candle_core::{backend::BackendStorage, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

type Sgemm = unsafe extern "C" fn(
    i32, // layout
    i32, // trans a
    i32, // trans b
    i32, // m
    i32, // n
    i32, // k
    f32, // alpha
    *const f32,
    i32,
    *const f32,
    i32,
    f32, // beta
    *mut f32,
    i32,
);

type Sgemv = unsafe extern "C" fn(
    i32, // layout
    i32, // trans
    i32, // m
    i32, // n
    f32, // alpha
    *const f32,
    i32,
    *const f32,
    i32, // inc x
    f32, // beta
    *mut f32,
    i32, // inc y
);

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

/// BLAS won at every row count measured here, one row (as `sgemv`) to thousands, so
/// only tiny products, where threading costs more than it saves, stay with candle.
const MIN_WORK: usize = 1 << 18;

struct Blas {
    _lib: libloading::Library,
    sgemm: Sgemm,
    sgemv: Sgemv,
    core: String,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

fn blas() -> Option<&'static Blas> {
    BLAS.get_or_init(load).as_ref()
}

/// The products in use: `packed avx2` (the linear layers' kernel, `packed.rs`) and/or
/// `openblas (<core type>)`, or `None` when candle's matmul runs.
pub fn backend() -> Option<String> {
    if !requested() {
        return None;
    }
    let blas = blas().map(|b| format!("openblas ({})", b.core));
    match (super::packed::available(), blas) {
        (true, Some(b)) => Some(format!("packed avx2 (linear layers), {b}")),
        (true, None) => Some("packed avx2 (linear layers)".into()),
        (false, b) => b,
    }
}

/// BLAS runs unless `SCALPEL_BLAS` is `off` (or `0`, `candle`).
pub(crate) fn requested() -> bool {
    !std::env::var("SCALPEL_BLAS").is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "candle"))
}

fn load() -> Option<Blas> {
    let lib = ["libopenblas.so.0", "libopenblas.so"]
        .iter()
        // SAFETY: loading OpenBLAS runs its initialisers, which only set up its own
        // thread pool and kernel table.
        .find_map(|name| unsafe { libloading::Library::new(*name) }.ok())?;
    // SAFETY: the symbol types are OpenBLAS's documented C signatures.
    unsafe {
        let sgemm: Sgemm = *lib.get::<Sgemm>(b"cblas_sgemm\0").ok()?;
        let sgemv: Sgemv = *lib.get::<Sgemv>(b"cblas_sgemv\0").ok()?;
        let corename = |lib: &libloading::Library| -> Option<String> {
            let f = lib
                .get::<unsafe extern "C" fn() -> *const std::os::raw::c_char>(
                    b"openblas_get_corename\0",
                )
                .ok()?;
            let p = f();
            (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        let mut core = corename(&lib).unwrap_or_else(|| "unknown".into());
        // One thread inside OpenBLAS: products are split across rayon's pool instead
        // (see `LinearOp`). OpenBLAS's own pool spins (sched_yield) for a while after
        // every call, and on a small machine those spinning threads took the cores the
        // elementwise ops between products needed: 16% of a scoring run's time.
        if let Ok(set) = lib.get::<unsafe extern "C" fn(i32)>(b"openblas_set_num_threads\0") {
            set(1);
        }
        if let Some(want) = better_core(&core) {
            let init = lib.get::<unsafe extern "C" fn()>(b"gotoblas_dynamic_init\0");
            let quit = lib.get::<unsafe extern "C" fn()>(b"gotoblas_dynamic_quit\0");
            if let (Ok(init), Ok(quit)) = (init, quit) {
                // OpenBLAS reads its core type from the environment when it initialises.
                std::env::set_var("OPENBLAS_CORETYPE", want);
                quit();
                init();
                core = corename(&lib).unwrap_or(core);
            }
        }
        Some(Blas {
            _lib: lib,
            sgemm,
            sgemv,
            core,
        })
    }
}

/// A core type whose kernels this CPU runs and OpenBLAS did not choose, unless the user
/// set one.
fn better_core(chosen: &str) -> Option<&'static str> {
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let chosen = chosen.to_ascii_lowercase();
        let has_avx512 = ["skylakex", "cooperlake", "sapphirerapids"]
            .iter()
            .any(|c| chosen.contains(c));
        let has_avx2 = has_avx512 || ["haswell", "zen"].iter().any(|c| chosen.contains(c));
        if !has_avx512
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Some("SkylakeX");
        }
        if !has_avx2
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Some("Haswell");
        }
    }
    let _ = chosen;
    None
}

/// Whether BLAS runs here (asked for, and the machine has it).
pub(crate) fn available() -> bool {
    requested() && blas().is_some()
}

/// Whether a product of at most [`super::generate::batch_rows`] rows (f32, on the CPU,
/// outside autograd) gives each row the same bits whatever rows run beside it: true
/// where such products run in the packed kernel (any number of rows) or the skinny
/// kernel (up to its `MAX_ROWS`), whose every output is one row's dot product
/// accumulated in a fixed order. Batched decoding relies on it.
pub fn rows_independent() -> bool {
    super::packed::available() || (available() && super::skinny::available())
}

/// Row-major, single-threaded `c = alpha · a · op(b)` for `a` `[m, k]` (row stride
/// `lda`), `op(b)` `[k, n]` (`b` is `[n, k]` with `trans_b`, else `[k, n]`; row stride
/// `ldb`) and `c` `[m, n]` (row stride `ldc`), overwritten. For products small enough
/// that the caller parallelises over many of them (attention heads).
///
/// # Safety
/// The pointers must address matrices of those shapes and strides, `c` must not
/// overlap `a` or `b` or be written by another thread meanwhile, and
/// [`available`] must have returned true.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    trans_b: bool,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, lda): (*const f32, usize),
    (b, ldb): (*const f32, usize),
    (c, ldc): (*mut f32, usize),
) {
    let blas = blas().expect("gemm is called only where BLAS is available");
    (blas.sgemm)(
        ROW_MAJOR,
        NO_TRANS,
        if trans_b { TRANS } else { NO_TRANS },
        m as i32,
        n as i32,
        k as i32,
        alpha,
        a,
        lda as i32,
        b,
        ldb as i32,
        0.0,
        c,
        ldc as i32,
    );
}

/// `x · wᵀ` for `x` `[m, k]` and `w` `[n, k]` through BLAS, or `None` when candle's
/// matmul should run (not f32 on the CPU, a non-contiguous operand, a small product, or
/// no BLAS on this machine).
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !requested() {
        return Ok(None);
    }
    linear_if_loaded(x, w)
}

/// [`linear`] whether or not BLAS was asked for (the tests run it where it is present).
pub(crate) fn linear_if_loaded(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    // Only outside autograd: this op has no backward, so products that gradients flow
    // through (breaker training, attacks) keep candle's matmul.
    if x.track_op()
        || w.track_op()
        || !x.device().is_cpu()
        || x.dtype() != candle_core::DType::F32
        || w.dtype() != candle_core::DType::F32
        || x.rank() != 2
        || w.rank() != 2
        || !w.is_contiguous()
    {
        return Ok(None);
    }
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    // Few rows go to the skinny kernel however small the product, so that each row's
    // result never depends on how many rows run beside it (`rows_independent`).
    let few_rows = m <= super::skinny::MAX_ROWS && super::skinny::available();
    if k != k2
        || (!few_rows && m * n * k < MIN_WORK)
        || [m, n, k].iter().any(|&d| d > i32::MAX as usize)
    {
        return Ok(None);
    }
    if blas().is_none() {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op2(w, LinearOp)?))
}

/// `x · wᵀ` as a candle op (forward only: see [`linear`]).
struct LinearOp;

/// An output buffer shared by threads that each write a disjoint part of it (column
/// blocks here, attention heads in `attention.rs`).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every user gives each thread a part no other thread writes.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer `offset` elements in. A method, so closures capture the whole (Send)
    /// wrapper rather than its raw-pointer field.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers pass offsets within the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// The elements of a contiguous f32 CPU tensor, borrowed from its storage (`op` names
/// the op in the error).
pub(crate) fn cpu_elements<'a>(
    op: &str,
    storage: &'a candle_core::Storage,
    layout: &Layout,
) -> Result<&'a [f32]> {
    let (candle_core::Storage::Cpu(CpuStorage::F32(all)), Some((start, end))) =
        (storage, layout.contiguous_offsets())
    else {
        candle_core::bail!("{op}: operands must be contiguous f32 on the CPU");
    };
    Ok(&all[start..end])
}

/// The elements of two contiguous f32 CPU operands of the CPU ops here (`op` names the
/// op in the error).
pub(crate) fn f32_operands<'a>(
    op: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32])> {
    let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else {
        candle_core::bail!("{op}: f32 operands only, got {:?}", s1.dtype());
    };
    let (Some((ao, ae)), Some((bo, be))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
    else {
        candle_core::bail!("{op}: operands must be contiguous");
    };
    Ok((&a[ao..ae], &b[bo..be]))
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "blas-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = f32_operands(self.name(), (s1, l1), (s2, l2))?;
        let (m, k) = l1.shape().dims2()?;
        let (n, _) = l2.shape().dims2()?;
        let blas = blas().ok_or_else(|| candle_core::Error::Msg("BLAS went away".into()))?;
        // Not zeroed: with beta = 0 BLAS writes every element without reading it, and
        // zeroing a `[positions, vocab]` output first was a serial pass over it.
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        // Output columns (weight rows) split into one block per thread: each thread packs
        // only its share of the weight, and blocks write disjoint columns of `out`.
        let threads = rayon::current_num_threads().max(1);
        let block = n.div_ceil(threads).next_multiple_of(16).min(n);
        let out_ptr = OutPtr(out.as_mut_ptr());
        // A few rows (decoding): the weight streamed once, unpacked (`skinny.rs`).
        let skinny = m <= super::skinny::MAX_ROWS && super::skinny::available();
        let run = |j0: usize| {
            let nb = block.min(n - j0);
            // SAFETY: x is m×k, w is n×k and out is m×n, all row-major; this call reads
            // rows j0..j0+nb of w and writes columns j0..j0+nb of out, which no other
            // block writes.
            unsafe {
                if skinny {
                    super::skinny::linear(
                        (m, nb, k),
                        x.as_ptr(),
                        w.as_ptr().add(j0 * k),
                        out_ptr.at(j0),
                        n,
                    );
                    return;
                }
                if m == 1 {
                    // One row without AVX-512: a matrix-vector product, which streams
                    // the weight once; gemm's packing would copy it first.
                    (blas.sgemv)(
                        ROW_MAJOR,
                        NO_TRANS,
                        nb as i32,
                        k as i32,
                        1.0,
                        w.as_ptr().add(j0 * k),
                        k as i32,
                        x.as_ptr(),
                        1,
                        0.0,
                        out_ptr.at(j0),
                        1,
                    );
                    return;
                }
                (blas.sgemm)(
                    ROW_MAJOR,
                    NO_TRANS,
                    TRANS,
                    m as i32,
                    nb as i32,
                    k as i32,
                    1.0,
                    x.as_ptr(),
                    k as i32,
                    w.as_ptr().add(j0 * k),
                    k as i32,
                    0.0,
                    out_ptr.at(j0),
                    n as i32,
                );
            }
        };
        let starts: Vec<usize> = (0..n).step_by(block).collect();
        if starts.len() == 1 {
            run(0);
        } else {
            use rayon::prelude::*;
            starts.into_par_iter().for_each(run);
        }
        // SAFETY: the blocks above wrote all m·n elements.
        unsafe { out.set_len(m * n) };
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::tests::max_diff;
    use candle_core::{Device, Var};

    /// Where the machine has OpenBLAS (CI installs it) the BLAS path must give candle's
    /// products; without it, it must decline. Tensors autograd tracks, and small
    /// products of many rows, always take candle's path; small products of a few rows
    /// take the few-row kernel where it runs (so that a row's result never depends on
    /// the rows beside it). One row runs as a matrix-vector product, and a width that
    /// does not split evenly across threads leaves a short last block.
    #[test]
    fn blas_products_match_candle_and_autograd_keeps_candles_matmul() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1f32, (1539, 576), &dev).unwrap();
        let x = Tensor::randn(0f32, 1f32, (70, 576), &dev).unwrap();
        let tracked = Var::from_tensor(&x).unwrap();
        assert!(linear_if_loaded(tracked.as_tensor(), &w).unwrap().is_none());
        let one = Tensor::ones((1, 8), candle_core::DType::F32, &dev).unwrap();
        let many = Tensor::ones((64, 8), candle_core::DType::F32, &dev).unwrap();
        assert!(linear_if_loaded(&many, &one).unwrap().is_none());
        match linear_if_loaded(&one, &one).unwrap() {
            Some(y) => {
                assert!(super::super::skinny::available());
                assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![8.0]]);
            }
            None => assert!(blas().is_none() || !super::super::skinny::available()),
        }
        for rows in [1, 3, 70] {
            let x = x.narrow(0, 0, rows).unwrap();
            let Some(y) = linear_if_loaded(&x, &w).unwrap() else {
                assert!(blas().is_none());
                eprintln!("no OpenBLAS on this machine: candle's matmul runs");
                return;
            };
            let want = x.matmul(&w.t().unwrap()).unwrap();
            assert!(
                max_diff(&y, &want) < 1e-3,
                "{rows} rows: {}",
                max_diff(&y, &want)
            );
        }
        eprintln!("BLAS: openblas ({})", blas().unwrap().core);
    }
}
