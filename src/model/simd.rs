//! Element loops compiled twice, for the baseline x86-64 and for AVX2 + FMA, the second
//! picked at run time where the CPU has them: the loops (exponentials, norms, RoPE,
//! SiLU) are written so that the compiler vectorises them, and with AVX2 they run eight
//! lanes wide instead of four.

/// Whether the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// The whole body of a function that runs `$body($args)`: compiled for AVX2 + FMA and
/// called so where the CPU has them, else as compiled for the baseline. `$body` should
/// be `#[inline(always)]`, so that its loops are compiled inside each variant.
macro_rules! with_avx2 {
    ($body:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) -> $ret {
                $body($($arg),*)
            }
            if $crate::model::simd::avx2_fma() {
                // SAFETY: the CPU has the features `avx2` is compiled for.
                return unsafe { avx2($($arg),*) };
            }
        }
        $body($($arg),*)
    }};
}

pub(crate) use with_avx2;
