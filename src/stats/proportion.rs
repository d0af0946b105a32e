//! Wilson's score interval for a binomial proportion (Wilson 1927; Newcombe 1998's
//! method 3): good coverage near 0 and 1 where the Wald interval fails.

use super::{z_two_sided, Estimate, StatsError};

/// `k` successes of `n` at `level` (e.g. 0.95).
pub fn wilson(k: u64, n: u64, level: f64) -> Result<Estimate, StatsError> {
    if n == 0 || k > n {
        return Err(StatsError::Invalid(format!(
            "a proportion needs 0 ≤ k ≤ n and n > 0 (got {k} of {n})"
        )));
    }
    let z = z_two_sided(level);
    let (nf, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    Ok(Estimate {
        value: p,
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
        level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_newcombes_worked_examples() {
        // Newcombe (1998), Table I, method 3 (score interval without continuity correction).
        for (k, n, lo, hi) in [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ] {
            let e = wilson(k, n, 0.95).unwrap();
            assert!(
                (e.lo - lo).abs() < 1e-4 && (e.hi - hi).abs() < 1e-4,
                "{k}/{n}: {e:?}"
            );
        }
        assert!(wilson(3, 2, 0.95).is_err());
        assert!(wilson(0, 0, 0.95).is_err());
    }
}
