//! Statistics for gates: paired differences between an intervention and its reference,
//! with intervals and one-sided tests against a margin.
//!
//! - [`proportion`]: Wilson intervals for a proportion.
//! - [`mcnemar`]: the exact McNemar test for paired binary outcomes.
//! - [`paired`]: paired samples (optionally clustered, e.g. RealToxicityPrompts samples
//!   that share a prompt): means, cluster-robust standard errors, seeded bootstrap.
//! - [`holm`]: Holm's step-down correction across the gates of a run.
//! - [`gate`]: superiority, non-inferiority and absolute gates, and their verdicts with
//!   estimate, interval, n, p-value and minimum detectable effect.

pub mod gate;
pub mod holm;
pub mod mcnemar;
pub mod paired;
pub mod proportion;
pub mod retained;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// A point estimate with a two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    /// Coverage of [lo, hi], e.g. 0.95.
    pub level: f64,
}

fn std_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("standard normal")
}

/// The standard normal quantile for a two-sided interval at `level`.
pub fn z_two_sided(level: f64) -> f64 {
    std_normal().inverse_cdf(0.5 + level / 2.0)
}

/// Φ⁻¹(p).
pub fn z_quantile(p: f64) -> f64 {
    std_normal().inverse_cdf(p)
}

/// Φ(z).
pub fn normal_cdf(z: f64) -> f64 {
    std_normal().cdf(z)
}

/// Errors of statistics on bad input: empty or mismatched samples, non-finite values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("{0}")]
    Invalid(String),
}
