//! How much of an intervention's effect survives an attack: the ratio of two relative
//! reductions on the same items, `r_A / r_0`, where `r = (mean(reference) −
//! mean(intervention)) / mean(reference)` without the attack (0) and with it (A), each
//! case attacked by an attack fitted against it. 1 is all of it, 0 none, below 0 an
//! intervention that makes things worse under attack.
//!
//! The interval is a percentile bootstrap over items, resampled jointly across the four
//! cases (they are paired by item), seeded. When `r_0` is near zero the ratio is
//! unstable; the interval then says so by being wide.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::paired::quantile;
use super::{Estimate, StatsError};

/// The four cases' per-item values, in the same item order.
pub struct Cases<'a> {
    pub reference: &'a [f64],
    pub intervention: &'a [f64],
    pub reference_attacked: &'a [f64],
    pub intervention_attacked: &'a [f64],
}

fn reduction(reference: f64, intervention: f64) -> f64 {
    (reference - intervention) / reference
}

/// `r_A / r_0` with its `level` percentile-bootstrap interval.
pub fn retained_share(
    c: &Cases<'_>,
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<Estimate, StatsError> {
    let n = c.reference.len();
    if n == 0 {
        return Err(StatsError::Invalid("no items".into()));
    }
    let all = [
        c.reference,
        c.intervention,
        c.reference_attacked,
        c.intervention_attacked,
    ];
    if all.iter().any(|v| v.len() != n) {
        return Err(StatsError::Invalid(
            "the four cases must score the same items".into(),
        ));
    }
    if all.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
        return Err(StatsError::Invalid("a value is not finite".into()));
    }
    let share = |idx: &mut dyn Iterator<Item = usize>| -> f64 {
        let mut s = [0.0f64; 4];
        let mut k = 0usize;
        for i in idx {
            for (j, v) in all.iter().enumerate() {
                s[j] += v[i];
            }
            k += 1;
        }
        let m: Vec<f64> = s.iter().map(|x| x / k as f64).collect();
        reduction(m[2], m[3]) / reduction(m[0], m[1])
    };
    let value = share(&mut (0..n));
    if !value.is_finite() {
        return Err(StatsError::Invalid(
            "the intervention's plain reduction is zero (or the reference's mean is): \
             no share of it to retain"
                .into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draws: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            let picks: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            share(&mut picks.into_iter())
        })
        .filter(|x| x.is_finite())
        .collect();
    if draws.is_empty() {
        return Err(StatsError::Invalid("no finite bootstrap draw".into()));
    }
    let a = (1.0 - level) / 2.0;
    Ok(Estimate {
        value,
        lo: quantile(&mut draws, a),
        hi: quantile(&mut draws, 1.0 - a),
        level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reduction_kept_whole_is_one_and_halved_is_a_half() {
        let r = [0.8, 0.6, 0.7, 0.9, 0.5, 0.6];
        let iv: Vec<f64> = r.iter().map(|x| x * 0.5).collect();
        let whole = retained_share(
            &Cases {
                reference: &r,
                intervention: &iv,
                reference_attacked: &r,
                intervention_attacked: &iv,
            },
            0.9,
            500,
            1,
        )
        .unwrap();
        assert!((whole.value - 1.0).abs() < 1e-12);
        assert!(whole.lo <= 1.0 + 1e-12 && whole.hi >= 1.0 - 1e-12);
        let iv_a: Vec<f64> = r.iter().map(|x| x * 0.75).collect();
        let half = retained_share(
            &Cases {
                reference: &r,
                intervention: &iv,
                reference_attacked: &r,
                intervention_attacked: &iv_a,
            },
            0.9,
            500,
            1,
        )
        .unwrap();
        assert!((half.value - 0.5).abs() < 1e-12, "{half:?}");
        // No plain reduction: nothing to retain, an error rather than a ratio of zeros.
        assert!(retained_share(
            &Cases {
                reference: &r,
                intervention: &r,
                reference_attacked: &r,
                intervention_attacked: &iv,
            },
            0.9,
            100,
            1
        )
        .is_err());
    }
}
