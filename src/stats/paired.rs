//! Paired samples: per-item scores of an intervention (`y`) and of its reference (`x`)
//! on the same items, optionally grouped into clusters of items that are not independent
//! (RealToxicityPrompts samples of one prompt). Every statistic here is a function of
//! per-cluster sums, so the bootstrap resamples clusters and the standard errors are
//! cluster-robust (CR1) where clusters are given; without clusters each item is its own.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::StatsError;

/// What a gate measures on a paired sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// mean(y) − mean(x).
    Difference,
    /// mean(y) / mean(x) − 1.
    Relative,
    /// mean(y): the intervention's own level, no reference needed.
    Level,
}

/// Per-item scores, paired by position, with optional cluster ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub clusters: Option<Vec<u64>>,
}

/// Sums over one cluster (or over a resample of clusters).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    x: f64,
    y: f64,
    n: f64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.x += o.x;
        self.y += o.y;
        self.n += o.n;
    }

    fn effect(&self, e: Effect) -> f64 {
        match e {
            Effect::Difference => (self.y - self.x) / self.n,
            Effect::Relative => self.y / self.x - 1.0,
            Effect::Level => self.y / self.n,
        }
    }
}

impl Paired {
    /// Checked: equal lengths, at least two items, finite scores, one cluster id per item.
    pub fn new(x: Vec<f64>, y: Vec<f64>, clusters: Option<Vec<u64>>) -> Result<Self, StatsError> {
        if x.len() != y.len() {
            return Err(StatsError::Invalid(format!(
                "paired samples differ in length ({} reference vs {} intervention items)",
                x.len(),
                y.len()
            )));
        }
        if x.len() < 2 {
            return Err(StatsError::Invalid(format!(
                "a paired sample needs at least 2 items (got {})",
                x.len()
            )));
        }
        if let Some(i) = x.iter().chain(&y).position(|v| !v.is_finite()) {
            let (side, at) = if i < x.len() {
                ("reference", i)
            } else {
                ("intervention", i - x.len())
            };
            return Err(StatsError::Invalid(format!(
                "{side} score of item {at} is not finite"
            )));
        }
        if let Some(c) = &clusters {
            if c.len() != x.len() {
                return Err(StatsError::Invalid(format!(
                    "{} cluster ids for {} items",
                    c.len(),
                    x.len()
                )));
            }
        }
        Ok(Paired { x, y, clusters })
    }

    /// An intervention's scores alone (for [`Effect::Level`]).
    pub fn level(y: Vec<f64>, clusters: Option<Vec<u64>>) -> Result<Self, StatsError> {
        Paired::new(vec![0.0; y.len()], y, clusters)
    }

    pub fn n(&self) -> usize {
        self.x.len()
    }

    fn cluster_sums(&self) -> Vec<Sums> {
        match &self.clusters {
            None => self
                .x
                .iter()
                .zip(&self.y)
                .map(|(&x, &y)| Sums { x, y, n: 1.0 })
                .collect(),
            Some(ids) => {
                let mut m: BTreeMap<u64, Sums> = BTreeMap::new();
                for ((&x, &y), id) in self.x.iter().zip(&self.y).zip(ids) {
                    m.entry(*id).or_default().add(&Sums { x, y, n: 1.0 });
                }
                m.into_values().collect()
            }
        }
    }

    /// Number of independent units: clusters, or items.
    pub fn units(&self) -> usize {
        self.cluster_sums().len()
    }

    pub fn estimate(&self, e: Effect) -> f64 {
        let mut t = Sums::default();
        for s in self.cluster_sums() {
            t.add(&s);
        }
        t.effect(e)
    }

    /// Standard error of [`Paired::estimate`]: of a mean of per-item values `v_i` (the
    /// difference, the level, or for the ratio the linearised residual y − Q·x over
    /// mean(x), the delta method), cluster-robust: G/(G−1) · Σ_g (Σ_{i∈g} (v_i − v̄))² / N².
    pub fn std_error(&self, e: Effect) -> f64 {
        let n = self.n() as f64;
        let mean_x = self.x.iter().sum::<f64>() / n;
        let q = self.estimate(Effect::Relative) + 1.0;
        let v: Vec<f64> = self
            .x
            .iter()
            .zip(&self.y)
            .map(|(&x, &y)| match e {
                Effect::Difference => y - x,
                Effect::Level => y,
                Effect::Relative => (y - q * x) / mean_x,
            })
            .collect();
        let mean = v.iter().sum::<f64>() / n;
        let mut groups: BTreeMap<u64, f64> = BTreeMap::new();
        for (i, vi) in v.iter().enumerate() {
            let id = self.clusters.as_ref().map_or(i as u64, |c| c[i]);
            *groups.entry(id).or_default() += vi - mean;
        }
        let g = groups.len() as f64;
        if g < 2.0 {
            return f64::INFINITY;
        }
        let ss: f64 = groups.values().map(|s| s * s).sum();
        (g / (g - 1.0) * ss / (n * n)).sqrt()
    }

    /// `resamples` bootstrap replicates of the estimate, resampling clusters (or items)
    /// with replacement, seeded (ChaCha8, portable across platforms).
    pub fn bootstrap(&self, e: Effect, resamples: usize, seed: u64) -> Vec<f64> {
        let units = self.cluster_sums();
        let g = units.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..resamples)
            .map(|_| {
                let mut t = Sums::default();
                for _ in 0..g {
                    t.add(&units[rng.random_range(0..g)]);
                }
                t.effect(e)
            })
            .collect()
    }
}

/// The `q`-quantile of `v` (sorted in place), linear between order statistics.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_robust_error_reduces_to_the_iid_one_without_clusters() {
        let x = vec![0.1, 0.4, 0.2, 0.9, 0.5, 0.3];
        let y = vec![0.0, 0.5, 0.1, 0.6, 0.2, 0.3];
        let p = Paired::new(x.clone(), y.clone(), None).unwrap();
        let d: Vec<f64> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
        let n = d.len() as f64;
        let m = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!((p.std_error(Effect::Difference) - sd / n.sqrt()).abs() < 1e-12);
        assert!((p.estimate(Effect::Difference) - m).abs() < 1e-12);
        // One cluster per item is the same as none.
        let c = Paired::new(x, y, Some((0..6).collect())).unwrap();
        assert!((c.std_error(Effect::Difference) - p.std_error(Effect::Difference)).abs() < 1e-12);
    }

    #[test]
    fn bad_samples_are_errors_naming_the_item() {
        assert!(Paired::new(vec![1.0], vec![1.0], None).is_err());
        assert!(Paired::new(vec![1.0, 2.0], vec![1.0], None).is_err());
        let e = Paired::new(vec![1.0, 2.0], vec![1.0, f64::NAN], None).unwrap_err();
        assert!(
            e.to_string().contains("intervention score of item 1"),
            "{e}"
        );
        assert!(Paired::new(vec![1.0, 2.0], vec![1.0, 2.0], Some(vec![0])).is_err());
    }

    #[test]
    fn bootstrap_is_seeded() {
        let p = Paired::new(vec![0.0, 1.0, 0.0, 1.0], vec![1.0, 1.0, 0.0, 0.0], None).unwrap();
        assert_eq!(
            p.bootstrap(Effect::Difference, 50, 7),
            p.bootstrap(Effect::Difference, 50, 7)
        );
        assert_ne!(
            p.bootstrap(Effect::Difference, 50, 7),
            p.bootstrap(Effect::Difference, 50, 8)
        );
    }
}
