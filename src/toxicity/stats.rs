//! The statistics `scorer-report` prints: ROC AUC with DeLong's variance, and Spearman's ρ
//! with a Fisher-z interval using Bonett & Wright's variance.
//!
//! Both intervals are analytic (no resampling), so a report is deterministic and cheap;
//! tests check them against scipy/scikit-learn values and check their coverage on
//! synthetic data with a known answer.

pub use crate::stats::{z_two_sided, Estimate};

/// Midranks (1-based; ties get the mean of the ranks they span), as scipy's
/// `rankdata(method="average")`.
pub fn midranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && xs[idx[j]] == xs[idx[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share ranks i+1..=j; their mean is (i + 1 + j) / 2.
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        i = j;
    }
    ranks
}

/// ROC AUC = P(score of a random positive > score of a random negative) + ½ P(tie)
/// (the Mann–Whitney U statistic over m·n).
pub fn auc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    auc_delong(pos, neg, 0.95).map(|e| e.value)
}

/// AUC with DeLong, DeLong & Clarke-Pearson's (1988) variance and a normal interval,
/// clipped to [0, 1]. Needs at least two positives and two negatives.
///
/// Structural components via midranks (Sun & Xu 2014): for positive i,
/// V10_i = (rank_all(x_i) − rank_pos(x_i)) / n; for negative j,
/// V01_j = 1 − (rank_all(y_j) − rank_neg(y_j)) / m; var = s²(V10)/m + s²(V01)/n.
pub fn auc_delong(pos: &[f64], neg: &[f64], level: f64) -> Option<Estimate> {
    let (m, n) = (pos.len(), neg.len());
    if m < 2 || n < 2 || pos.iter().chain(neg).any(|x| x.is_nan()) {
        return None;
    }
    let all: Vec<f64> = pos.iter().chain(neg).copied().collect();
    let r_all = midranks(&all);
    let r_pos = midranks(pos);
    let r_neg = midranks(neg);
    let v10: Vec<f64> = (0..m).map(|i| (r_all[i] - r_pos[i]) / n as f64).collect();
    let v01: Vec<f64> = (0..n)
        .map(|j| 1.0 - (r_all[m + j] - r_neg[j]) / m as f64)
        .collect();
    let value = mean(&v10);
    let var = sample_var(&v10) / m as f64 + sample_var(&v01) / n as f64;
    let half = z_two_sided(level) * var.max(0.0).sqrt();
    Some(Estimate {
        value,
        lo: (value - half).max(0.0),
        hi: (value + half).min(1.0),
        level,
    })
}

/// Pearson's r.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some(sxy / (sxx * syy).sqrt())
}

/// Spearman's ρ: Pearson's r of the midranks (scipy's `spearmanr`, ties included).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.iter().chain(y).any(|v| v.is_nan()) {
        return None;
    }
    pearson(&midranks(x), &midranks(y))
}

/// Spearman's ρ with a Fisher-z interval: tanh(atanh ρ ± z·σ), σ² = (1 + ρ²/2)/(n − 3)
/// (Bonett & Wright 2000; the plain 1/(n − 3) is too narrow for ranks). Needs n ≥ 4 and
/// neither variable constant.
pub fn spearman_ci(x: &[f64], y: &[f64], level: f64) -> Option<Estimate> {
    let n = x.len();
    if n < 4 {
        return None;
    }
    let r = spearman(x, y)?;
    // |ρ| = 1 has an infinite z; the interval collapses onto it.
    let rc = r.clamp(-1.0 + 1e-12, 1.0 - 1e-12);
    let z = rc.atanh();
    let se = ((1.0 + r * r / 2.0) / (n as f64 - 3.0)).sqrt();
    let half = z_two_sided(level) * se;
    Some(Estimate {
        value: r,
        lo: (z - half).tanh(),
        hi: (z + half).tanh(),
        level,
    })
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn sample_var(x: &[f64]) -> f64 {
    let m = mean(x);
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() as f64 - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    // Ties on both sides and across classes.
    const POS: [f64; 5] = [0.9, 0.8, 0.8, 0.55, 0.3];
    const NEG: [f64; 6] = [0.8, 0.1, 0.2, 0.3, 0.35, 0.05];

    #[test]
    fn auc_matches_scikit_learn_with_ties() {
        // python -c "from sklearn.metrics import roc_auc_score as f; print(f([1]*5+[0]*6,
        //   [0.9,0.8,0.8,0.55,0.3,0.8,0.1,0.2,0.3,0.35,0.05]))"  → 0.8500000000000001
        assert!((auc(&POS, &NEG).unwrap() - 0.85).abs() < 1e-12);
        assert_eq!(auc(&[1.0, 2.0], &[0.0, 0.5]), Some(1.0));
        assert_eq!(auc(&[0.0, 0.0], &[0.0, 0.0]), Some(0.5));
        assert_eq!(auc(&[1.0], &[0.0, 0.5]), None);
    }

    #[test]
    fn delong_variance_matches_the_hand_computation() {
        // By hand: V10 = [1, 5.5/6, 5.5/6, 5/6, 3.5/6], V01 = [0.4, 1, 1, 0.9, 0.8, 1];
        // python3 -c "import statistics as s; print(s.variance([1,5.5/6,5.5/6,5/6,3.5/6])/5
        //   + s.variance([0.4,1,1,0.9,0.8,1])/6)"  → 0.014305555555555552
        let e = auc_delong(&POS, &NEG, 0.95).unwrap();
        let half = 1.959963984540054 * 0.014305555555555552f64.sqrt();
        assert!((e.lo - (0.85 - half)).abs() < 1e-12, "{e:?}");
        assert_eq!(e.hi, 1.0, "clipped");
    }

    #[test]
    fn spearman_matches_scipy() {
        // python -c "from scipy.stats import spearmanr; print(spearmanr(
        //   [0.1,0.4,0.35,0.8,0.8,0.2,0.55,0.9], [1,1,0.3,0.7,0.2,0.2,0.9,0.5]).statistic)"
        //   → -0.20000367319577247
        let x = [0.1, 0.4, 0.35, 0.8, 0.8, 0.2, 0.55, 0.9];
        let y = [1.0, 1.0, 0.3, 0.7, 0.2, 0.2, 0.9, 0.5];
        assert!((spearman(&x, &y).unwrap() - -0.20000367319577247).abs() < 1e-12);
        assert_eq!(midranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        let e = spearman_ci(&x, &y, 0.95).unwrap();
        assert!(e.lo < e.value && e.value < e.hi, "{e:?}");
    }

    fn normal(rng: &mut ChaCha8Rng) -> f64 {
        // Box–Muller; u1 in (0, 1] so the log is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Positives ~ N(1, 1), negatives ~ N(0, 1): AUC = Φ(1/√2) ≈ 0.760. Over 400 seeded
    /// replicates of 60 vs 80, the 95% DeLong interval should cover it about 95% of the
    /// time (binomial sd ≈ 1.1%).
    #[test]
    fn delong_interval_covers_the_true_auc() {
        let truth = crate::stats::normal_cdf(1.0 / 2f64.sqrt());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let reps = 400;
        let mut covered = 0;
        for _ in 0..reps {
            let pos: Vec<f64> = (0..60).map(|_| 1.0 + normal(&mut rng)).collect();
            let neg: Vec<f64> = (0..80).map(|_| normal(&mut rng)).collect();
            let e = auc_delong(&pos, &neg, 0.95).unwrap();
            covered += (e.lo <= truth && truth <= e.hi) as usize;
        }
        let rate = covered as f64 / reps as f64;
        eprintln!("DeLong 95% interval coverage: {rate}");
        assert!((0.91..=0.985).contains(&rate), "coverage {rate}");
    }

    /// Bivariate normal with Pearson r = 0.6: the population Spearman is
    /// (6/π)·asin(r/2) ≈ 0.582. The 95% interval at n = 50 should cover it ~95% of the time.
    #[test]
    fn spearman_interval_covers_the_true_rho() {
        let r: f64 = 0.6;
        let truth = 6.0 / std::f64::consts::PI * (r / 2.0).asin();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let reps = 400;
        let mut covered = 0;
        for _ in 0..reps {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for _ in 0..50 {
                let a = normal(&mut rng);
                let b = normal(&mut rng);
                x.push(a);
                y.push(r * a + (1.0 - r * r).sqrt() * b);
            }
            let e = spearman_ci(&x, &y, 0.95).unwrap();
            covered += (e.lo <= truth && truth <= e.hi) as usize;
        }
        let rate = covered as f64 / reps as f64;
        eprintln!("Spearman 95% interval coverage: {rate}");
        assert!((0.91..=0.99).contains(&rate), "coverage {rate}");
    }
}
