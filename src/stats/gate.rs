//! Gates: a one-sided test of an intervention against its reference (or of its own
//! level) with a margin, and the verdict it gives.
//!
//! Scores are oriented by [`Better`]: an *improvement* is a lower toxicity or a higher
//! accuracy. With `s = +1` when higher is better and `−1` when lower is, and θ the
//! measured [`Effect`]:
//!
//! | kind | passes when the data show | null rejected |
//! |---|---|---|
//! | superiority, margin δ | `s·θ > δ` (e.g. toxicity drops by more than 30% relative) | `s·θ ≤ δ` |
//! | non-inferiority, margin δ | `s·θ > −δ` (e.g. accuracy drops by less than 1 point) | `s·θ ≤ −δ` |
//! | within `[lo, hi]` | the level lies inside (two one-sided tests) | below `lo` or above `hi` |
//!
//! The interval reported is the two-sided `1 − 2α` one, so a gate passes exactly when
//! its interval clears the margin (before multiplicity correction). The minimum
//! detectable effect is `(z₁₋α + z_power)·SE`: how far beyond the null boundary the truth
//! must lie for the test to pass with probability `power`. A gate whose MDE exceeds its
//! margin (half-width for `within`) cannot tell its margin from nothing at this n: it is
//! *underpowered*, never *passed* by failing to find harm.

use serde::{Deserialize, Serialize};

use super::mcnemar;
use super::paired::{quantile, Effect, Paired};
use super::{normal_cdf, z_quantile, Estimate, StatsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    fn sign(self) -> f64 {
        match self {
            Better::Higher => 1.0,
            Better::Lower => -1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    Superiority { margin: f64 },
    NonInferiority { margin: f64 },
    Within { lo: f64, hi: f64 },
}

/// How the interval and p-value are computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Percentile bootstrap over clusters (or items), seeded.
    Bootstrap { resamples: usize, seed: u64 },
    /// Normal approximation with the cluster-robust standard error.
    Normal,
    /// Exact McNemar on paired 0/1 outcomes; superiority with margin 0 on a difference
    /// only (the hypothesis it tests).
    McNemar,
}

impl Default for Method {
    fn default() -> Self {
        Method::Bootstrap {
            resamples: 2000,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub kind: GateKind,
    pub effect: Effect,
    pub better: Better,
    pub alpha: f64,
    pub power: f64,
    pub method: Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Underpowered,
    /// The statistics alone would not fail the gate, but the condition it is tested
    /// under did not hold (an attack that never took against the defence): no evidence
    /// either way, so never a pass. Set by the harness, never by [`Gate::test`].
    Inconclusive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The measured effect (not oriented) with its `1 − 2α` interval.
    pub estimate: Estimate,
    pub n: usize,
    /// Independent units the statistics rest on (clusters, or items).
    pub units: usize,
    /// One-sided p-value of the gate's null (before multiplicity correction).
    pub p_value: f64,
    /// After Holm's correction across the run's gates (equal to `p_value` alone).
    pub p_adjusted: f64,
    pub std_error: f64,
    pub mde: f64,
    pub outcome: Outcome,
}

impl Gate {
    pub fn new(kind: GateKind, effect: Effect, better: Better) -> Self {
        Gate {
            kind,
            effect,
            better,
            alpha: 0.05,
            power: 0.8,
            method: Method::default(),
        }
    }

    fn check(&self, s: &Paired) -> Result<(), StatsError> {
        let bad = |m: String| Err(StatsError::Invalid(m));
        if !(self.alpha > 0.0 && self.alpha < 0.5 && self.power > 0.0 && self.power < 1.0) {
            return bad(format!(
                "alpha must lie in (0, 0.5) and power in (0, 1) (got {} and {})",
                self.alpha, self.power
            ));
        }
        match (self.kind, self.effect) {
            // NaN bounds fail too.
            (GateKind::Within { lo, hi }, _)
                if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) =>
            {
                return bad(format!("within: lo {lo} must be below hi {hi}"))
            }
            (GateKind::Within { .. }, Effect::Level) => {}
            (GateKind::Within { .. }, _) | (_, Effect::Level) => return bad(
                "a level is gated with within, a comparison with superiority or non-inferiority"
                    .into(),
            ),
            (GateKind::Superiority { margin } | GateKind::NonInferiority { margin }, _)
                if !(margin >= 0.0 && margin.is_finite()) =>
            {
                return bad(format!("margin must be finite and ≥ 0 (got {margin})"))
            }
            _ => {}
        }
        if self.effect == Effect::Relative && s.x.iter().sum::<f64>() == 0.0 {
            return bad("a relative effect needs a reference mean other than 0".into());
        }
        if let Method::Bootstrap { resamples, .. } = self.method {
            if resamples < 1000 {
                return bad(format!(
                    "bootstrap needs at least 1000 resamples (got {resamples})"
                ));
            }
        }
        if self.method == Method::McNemar {
            let binary = s.x.iter().chain(&s.y).all(|v| *v == 0.0 || *v == 1.0);
            if !binary
                || s.clusters.is_some()
                || self.effect != Effect::Difference
                || self.kind != (GateKind::Superiority { margin: 0.0 })
            {
                return bad(
                    "McNemar tests unclustered 0/1 outcomes for superiority with margin 0".into(),
                );
            }
        }
        Ok(())
    }

    /// Test the gate on `s` (before multiplicity correction).
    pub fn test(&self, s: &Paired) -> Result<Verdict, StatsError> {
        self.check(s)?;
        let theta = s.estimate(self.effect);
        let se = s.std_error(self.effect);
        let sign = self.better.sign();
        let a = self.alpha;
        let bounds = self.bounds();
        let (lo, hi, p) = match self.method {
            Method::Normal => {
                let z = z_quantile(1.0 - a);
                let p = bounds
                    .iter()
                    .map(|&(b, side)| 1.0 - normal_cdf(side * (theta - b) / se))
                    .fold(0.0, f64::max);
                (theta - z * se, theta + z * se, p)
            }
            Method::Bootstrap { resamples, seed } => {
                let mut reps = s.bootstrap(self.effect, resamples, seed);
                let b = reps.len() as f64;
                // Share of replicates on the null side of each boundary: (k + 1)/(B + 1).
                let p = bounds
                    .iter()
                    .map(|&(bd, side)| {
                        let k = reps.iter().filter(|r| side * (*r - bd) <= 0.0).count();
                        (k as f64 + 1.0) / (b + 1.0)
                    })
                    .fold(0.0, f64::max);
                (quantile(&mut reps, a), quantile(&mut reps, 1.0 - a), p)
            }
            Method::McNemar => {
                let (mut better, mut worse) = (0u64, 0u64);
                for (x, y) in s.x.iter().zip(&s.y) {
                    if sign * (y - x) > 0.0 {
                        better += 1;
                    } else if sign * (y - x) < 0.0 {
                        worse += 1;
                    }
                }
                let z = z_quantile(1.0 - a);
                (
                    theta - z * se,
                    theta + z * se,
                    mcnemar::exact_greater(better, worse),
                )
            }
        };
        let mde = (z_quantile(1.0 - a) + z_quantile(self.power)) * se;
        let mut v = Verdict {
            estimate: Estimate {
                value: theta,
                lo,
                hi,
                level: 1.0 - 2.0 * a,
            },
            n: s.n(),
            units: s.units(),
            p_value: p,
            p_adjusted: p,
            std_error: se,
            mde,
            outcome: Outcome::Fail,
        };
        v.outcome = self.outcome(&v);
        Ok(v)
    }

    /// Null boundaries on the measured scale, each with the side that rejects it.
    fn bounds(&self) -> Vec<(f64, f64)> {
        let sign = self.better.sign();
        match self.kind {
            GateKind::Superiority { margin } => vec![(sign * margin, sign)],
            GateKind::NonInferiority { margin } => vec![(-sign * margin, sign)],
            GateKind::Within { lo, hi } => vec![(lo, 1.0), (hi, -1.0)],
        }
    }

    /// What the MDE is held against: the margin, or the half-width for `within`.
    fn scale(&self) -> f64 {
        match self.kind {
            GateKind::Superiority { margin } | GateKind::NonInferiority { margin } => margin,
            GateKind::Within { lo, hi } => (hi - lo) / 2.0,
        }
    }

    /// Pass when the (adjusted) p-value is below α. Otherwise fail when the interval lies
    /// wholly on the null side of a boundary (the data show the gate is not met, whatever
    /// the power); underpowered when a margin is set and the MDE exceeds it; else fail.
    fn outcome(&self, v: &Verdict) -> Outcome {
        let scale = self.scale();
        let e = &v.estimate;
        let decisive = self
            .bounds()
            .iter()
            .any(|&(b, side)| if side > 0.0 { e.hi <= b } else { e.lo >= b });
        if v.p_adjusted < self.alpha {
            Outcome::Pass
        } else if !decisive && scale > 0.0 && v.mde > scale {
            Outcome::Underpowered
        } else {
            Outcome::Fail
        }
    }
}

/// Test every gate, then correct their p-values together with Holm's method and settle
/// each outcome on the corrected value.
pub fn test_all(gates: &[(Gate, &Paired)]) -> Result<Vec<Verdict>, StatsError> {
    let mut vs = gates
        .iter()
        .map(|(g, s)| g.test(s))
        .collect::<Result<Vec<_>, _>>()?;
    let adj = super::holm::holm(&vs.iter().map(|v| v.p_value).collect::<Vec<_>>());
    for ((v, p), (g, _)) in vs.iter_mut().zip(adj).zip(gates) {
        v.p_adjusted = p;
        v.outcome = g.outcome(v);
    }
    Ok(vs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn normal(rng: &mut ChaCha8Rng) -> f64 {
        let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Paired 0/1 outcomes with P(x=1) = 0.60 and P(y=1) = 0.55 (true difference −0.05),
    /// correlated as per-item correctness is: p11 .45, p10 .15, p01 .10, p00 .30.
    fn accuracy_pairs(n: usize, rng: &mut ChaCha8Rng) -> Paired {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let u: f64 = rng.random();
            let (a, b) = if u < 0.45 {
                (1.0, 1.0)
            } else if u < 0.60 {
                (1.0, 0.0)
            } else if u < 0.70 {
                (0.0, 1.0)
            } else {
                (0.0, 0.0)
            };
            x.push(a);
            y.push(b);
        }
        Paired::new(x, y, None).unwrap()
    }

    /// RealToxicityPrompts-like scores: 10 samples per prompt sharing the prompt's level;
    /// the intervention multiplies the expected score by `ratio`, and how well it works
    /// varies from prompt to prompt (a shared deviation), as a breaker's does.
    fn clustered_scores(prompts: usize, ratio: f64, rng: &mut ChaCha8Rng) -> Paired {
        let (mut x, mut y, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for g in 0..prompts {
            let level = 0.3 + 0.1 * normal(rng);
            let works = 0.05 * normal(rng);
            for _ in 0..10 {
                x.push(level + 0.1 * normal(rng));
                y.push(ratio * level + works + 0.1 * normal(rng));
                c.push(g as u64);
            }
        }
        Paired::new(x, y, Some(c)).unwrap()
    }

    /// "Toxicity drops by more than `margin` relative", normal approximation.
    fn relative_drop(margin: f64, alpha: f64) -> Gate {
        Gate {
            alpha,
            method: Method::Normal,
            ..Gate::new(
                GateKind::Superiority { margin },
                Effect::Relative,
                Better::Lower,
            )
        }
    }

    fn pass_rate(trials: usize, mut one: impl FnMut(&mut ChaCha8Rng) -> Outcome) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(2024);
        let passes = (0..trials)
            .filter(|_| one(&mut rng) == Outcome::Pass)
            .count();
        passes as f64 / trials as f64
    }

    #[test]
    fn non_inferiority_at_the_margin_passes_about_alpha_of_the_time() {
        // The truth sits exactly on the null boundary: accuracy drops by the margin.
        let gate = |method| Gate {
            method,
            ..Gate::new(
                GateKind::NonInferiority { margin: 0.05 },
                Effect::Difference,
                Better::Higher,
            )
        };
        let normal = gate(Method::Normal);
        let rate = pass_rate(4000, |r| {
            normal.test(&accuracy_pairs(400, r)).unwrap().outcome
        });
        assert!(
            (0.03..=0.07).contains(&rate),
            "normal: false-pass rate {rate}"
        );
        let mut seed = 0;
        let boot = |s| {
            gate(Method::Bootstrap {
                resamples: 1000,
                seed: s,
            })
        };
        let rate = pass_rate(1000, |r| {
            seed += 1;
            boot(seed).test(&accuracy_pairs(400, r)).unwrap().outcome
        });
        assert!(
            (0.03..=0.07).contains(&rate),
            "bootstrap: false-pass rate {rate}"
        );
    }

    #[test]
    fn clustered_superiority_at_the_margin_passes_about_alpha_of_the_time() {
        // Toxicity falls by exactly the 30% the gate asks for.
        let g = relative_drop(0.3, 0.05);
        let rate = pass_rate(3000, |r| {
            g.test(&clustered_scores(100, 0.7, r)).unwrap().outcome
        });
        assert!(
            (0.03..=0.07).contains(&rate),
            "clustered: false-pass rate {rate}"
        );
        // Treating the 10 samples of a prompt as independent would pass far too often:
        // the cluster-robust error is what keeps the rate at α.
        let naive = pass_rate(3000, |r| {
            let mut s = clustered_scores(100, 0.7, r);
            s.clusters = None;
            g.test(&s).unwrap().outcome
        });
        eprintln!("clustered superiority at the margin: {rate}; ignoring clusters: {naive}");
        assert!(naive > 0.10, "ignoring clusters: {naive}");
        // And a real 50% drop passes nearly always.
        let power = pass_rate(500, |r| {
            g.test(&clustered_scores(100, 0.5, r)).unwrap().outcome
        });
        assert!(power > 0.9, "power {power}");
    }

    #[test]
    fn intervals_cover_the_true_value_at_their_level() {
        let g = |method| Gate {
            alpha: 0.025,
            method,
            ..Gate::new(
                GateKind::NonInferiority { margin: 0.05 },
                Effect::Difference,
                Better::Higher,
            )
        };
        for (method, trials) in [
            (Method::Normal, 4000),
            (
                Method::Bootstrap {
                    resamples: 1000,
                    seed: 3,
                },
                1000,
            ),
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(99);
            let covered = (0..trials)
                .filter(|_| {
                    let e = g(method)
                        .test(&accuracy_pairs(300, &mut rng))
                        .unwrap()
                        .estimate;
                    assert!((e.level - 0.95).abs() < 1e-12);
                    e.lo <= -0.05 && -0.05 <= e.hi
                })
                .count() as f64
                / trials as f64;
            assert!(
                (0.925..=0.975).contains(&covered),
                "{method:?}: coverage {covered}"
            );
        }
        // The cluster-robust interval of a relative effect covers too.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let rel = relative_drop(0.3, 0.025);
        let covered = (0..2000)
            .filter(|_| {
                let e = rel
                    .test(&clustered_scores(80, 0.7, &mut rng))
                    .unwrap()
                    .estimate;
                e.lo <= -0.3 && -0.3 <= e.hi
            })
            .count() as f64
            / 2000.0;
        assert!(
            (0.925..=0.975).contains(&covered),
            "relative: coverage {covered}"
        );
    }

    #[test]
    fn a_clear_loss_fails_even_when_the_margin_is_below_the_mde() {
        let ni = Gate::new(
            GateKind::NonInferiority { margin: 0.01 },
            Effect::Difference,
            Better::Higher,
        );
        // 40 items, the intervention wrong on 16 the reference got right: a 40-point loss
        // whose whole interval lies below −1 point, though n cannot resolve 1 point.
        let x = vec![1.0; 40];
        let y: Vec<f64> = (0..40).map(|i| if i < 16 { 0.0 } else { 1.0 }).collect();
        let v = ni.test(&Paired::new(x, y, None).unwrap()).unwrap();
        assert!(v.mde > 0.01 && v.estimate.hi < -0.01, "{v:?}");
        assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    }

    #[test]
    fn a_small_sample_is_underpowered_and_an_impossible_margin_fails() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ni = Gate::new(
            GateKind::NonInferiority { margin: 0.01 },
            Effect::Difference,
            Better::Higher,
        );
        // 40 items with no loss cannot resolve a 1-point margin: MDE ≫ 0.01, and the
        // interval straddles it.
        let x: Vec<f64> = (0..40).map(|i| f64::from(i % 10 < 6)).collect();
        let y: Vec<f64> = (0..40)
            .map(|i| {
                f64::from(i % 10 < 6)
                    + if i < 4 {
                        -1.0
                    } else if i % 10 == 9 {
                        1.0
                    } else {
                        0.0
                    }
            })
            .collect();
        let v = ni.test(&Paired::new(x, y, None).unwrap()).unwrap();
        assert_eq!(v.outcome, Outcome::Underpowered, "{v:?}");
        assert!(v.mde > 0.01 && v.estimate.lo < -0.01 && v.estimate.hi > -0.01);
        // The same margin on a sample with a real 5-point loss: the interval lies below
        // the margin, a fail whatever the power.
        let v = ni.test(&accuracy_pairs(40, &mut rng)).unwrap();
        assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
        // Superiority by 99% relative on a sample that shows a 50% drop: a real fail.
        let g = relative_drop(0.99, 0.05);
        let v = g.test(&clustered_scores(300, 0.5, &mut rng)).unwrap();
        assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
        assert!(v.estimate.value < -0.4 && v.estimate.value > -0.6);
    }

    #[test]
    fn mcnemar_and_within_gates() {
        // 30 items only the intervention gets right, 10 only the reference: p < 0.01.
        let mut x = vec![0.0; 30];
        x.extend(vec![1.0; 10]);
        x.extend(vec![1.0; 60]);
        let mut y = vec![1.0; 30];
        y.extend(vec![0.0; 10]);
        y.extend(vec![1.0; 60]);
        let s = Paired::new(x, y, None).unwrap();
        let g = Gate {
            method: Method::McNemar,
            ..Gate::new(
                GateKind::Superiority { margin: 0.0 },
                Effect::Difference,
                Better::Higher,
            )
        };
        let v = g.test(&s).unwrap();
        assert!((v.p_value - mcnemar::exact_greater(30, 10)).abs() < 1e-15);
        assert_eq!(v.outcome, Outcome::Pass);
        // McNemar refuses what it does not test.
        let bad = Gate {
            kind: GateKind::NonInferiority { margin: 0.01 },
            ..g
        };
        assert!(bad.test(&s).is_err());
        // CrowS-Pairs-like: a stereotype share of 0.5 ± 0.05 on 1,500 pairs at 0.51 passes,
        // at 0.58 fails.
        let share = |k: usize| {
            let y: Vec<f64> = (0..1500).map(|i| if i < k { 1.0 } else { 0.0 }).collect();
            Paired::level(y, None).unwrap()
        };
        let w = Gate::new(
            GateKind::Within { lo: 0.45, hi: 0.55 },
            Effect::Level,
            Better::Higher,
        );
        assert_eq!(w.test(&share(765)).unwrap().outcome, Outcome::Pass);
        assert_eq!(w.test(&share(870)).unwrap().outcome, Outcome::Fail);
        assert!(Gate {
            kind: GateKind::Within { lo: 0.6, hi: 0.4 },
            ..w
        }
        .test(&share(765))
        .is_err());
    }

    #[test]
    fn holm_across_gates_can_turn_a_pass_into_a_fail() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let g = relative_drop(0.3, 0.05);
        // Find a sample whose single-gate p lies in (0.025, 0.05): alone it passes, two
        // such gates together do not.
        let s = (0..2000)
            .map(|_| clustered_scores(60, 0.62, &mut rng))
            .find(|s| {
                let p = g.test(s).unwrap().p_value;
                p > 0.026 && p < 0.049
            })
            .expect("a borderline sample");
        assert_eq!(g.test(&s).unwrap().outcome, Outcome::Pass);
        let vs = test_all(&[(g, &s), (g, &s)]).unwrap();
        for v in vs {
            assert!(v.p_adjusted > 0.05 && v.outcome != Outcome::Pass, "{v:?}");
        }
    }
}
