//! The exact McNemar test for paired binary outcomes (e.g. per-item correctness under an
//! intervention and under its reference): among the discordant pairs, the count where
//! only the intervention is right is Binomial(b + c, ½) under no difference.

use statrs::distribution::{Binomial, DiscreteCDF};

/// One-sided p-value that the intervention is better: `b` pairs where only it is right,
/// `c` where only the reference is. P(X ≥ b), X ~ Binomial(b + c, ½); 1 with no
/// discordant pairs.
pub fn exact_greater(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 || b == 0 {
        return 1.0;
    }
    let bin = Binomial::new(0.5, n).expect("p = 1/2 is valid");
    // P(X ≥ b) = 1 − P(X ≤ b − 1) = P(X ≤ n − b) by symmetry, which keeps precision.
    bin.cdf(n - b)
}

/// Two-sided exact p-value: twice the smaller tail, capped at 1.
pub fn exact_two_sided(b: u64, c: u64) -> f64 {
    (2.0 * exact_greater(b, c).min(exact_greater(c, b))).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_p_values_by_hand() {
        // b = 1, c = 7: P(X ≤ 1 | 8, ½) = 9/256; two-sided 18/256 = 0.0703125.
        assert!((exact_two_sided(1, 7) - 0.0703125).abs() < 1e-12);
        assert!((exact_greater(7, 1) - 9.0 / 256.0).abs() < 1e-12);
        assert!((exact_greater(1, 7) - 255.0 / 256.0).abs() < 1e-12);
        // No discordant pairs: no evidence either way.
        assert_eq!(exact_two_sided(0, 0), 1.0);
        // Balanced: two-sided p is 1.
        assert_eq!(exact_two_sided(5, 5), 1.0);
    }
}
