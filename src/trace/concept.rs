//! Concept directions: where in the model a labelled concept (toxic vs non-toxic text,
//! stereotype vs anti-stereotype) is linearly readable, and which direction reads it.
//!
//! Each text is represented, per layer, by its residual stream (`hook_resid_post`)
//! averaged over its tokens after the first ([`super::activations::text_means`]). Per layer, two readers are fitted on a seeded training share and scored on the
//! held-out rest: the mean-difference direction (`μ₊ − μ₋`, threshold at the midpoint of
//! the projected class means), and an L2-regularised logistic-regression probe on
//! standardised features. The mean-difference direction is what an `offset` or a
//! direction `ablate` intervention uses.

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::activations::{encode_all, text_means};
use crate::model::{HookPoint, LoadedModel, ModelError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConceptLayer {
    pub layer: usize,
    /// Held-out accuracy of the logistic probe.
    pub probe_acc: f64,
    /// Held-out accuracy of the mean-difference direction.
    pub mean_diff_acc: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConceptReport {
    pub layers: Vec<ConceptLayer>,
    pub n_train: usize,
    pub n_heldout: usize,
    /// The layer whose probe reads the concept best on held-out texts.
    pub best_layer: usize,
    /// Mean-difference directions per layer, `[d]` each (not serialised).
    #[serde(skip)]
    pub directions: Vec<Tensor>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConceptError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("concept: {0}")]
    Invalid(String),
}

impl From<candle_core::Error> for ConceptError {
    fn from(e: candle_core::Error) -> Self {
        ConceptError::Model(e.into())
    }
}

/// Per-layer features of each text: `feats[layer][text]` is a `Vec<f64>` of length d.
fn features(
    model: &LoadedModel,
    texts: &[&str],
    max_tokens: usize,
) -> Result<Vec<Vec<Vec<f64>>>, ConceptError> {
    let n_layers = model.model.info().n_layers;
    let points: Vec<HookPoint> = (0..n_layers).map(HookPoint::ResidPost).collect();
    let seqs = encode_all(model, texts, max_tokens)?;
    let (means, _) = text_means(model, &seqs, &points, 8)?;
    points
        .iter()
        .map(|p| Ok(means[p].to_vec2::<f64>()?))
        .collect()
}

/// Fit and score both readers at every layer. `data` is (text, label); `heldout` the
/// share scored.
pub fn concept_directions(
    model: &LoadedModel,
    data: &[(String, bool)],
    heldout: f64,
    seed: u64,
    max_tokens: usize,
) -> Result<ConceptReport, ConceptError> {
    let n_pos = data.iter().filter(|d| d.1).count();
    if n_pos < 2 || data.len() - n_pos < 2 {
        return Err(ConceptError::Invalid(format!(
            "need at least two texts of each label (got {n_pos} positive, {} negative)",
            data.len() - n_pos
        )));
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_held = ((data.len() as f64 * heldout).round() as usize).clamp(1, data.len() - 2);
    let (held, train) = order.split_at(n_held);
    let texts: Vec<&str> = data.iter().map(|d| d.0.as_str()).collect();
    let feats = features(model, &texts, max_tokens)?;
    let y: Vec<bool> = data.iter().map(|d| d.1).collect();
    let mut layers = Vec::with_capacity(feats.len());
    let mut directions = Vec::with_capacity(feats.len());
    for (l, x) in feats.iter().enumerate() {
        let (dir, mid) = mean_difference(x, &y, train);
        let md_acc = accuracy(held, &y, |i| dot(&x[i], &dir) > mid);
        let probe = Logistic::fit(x, &y, train, 1e-2, 300);
        let p_acc = accuracy(held, &y, |i| probe.predict(&x[i]));
        layers.push(ConceptLayer {
            layer: l,
            probe_acc: p_acc,
            mean_diff_acc: md_acc,
        });
        directions.push(Tensor::from_vec(
            dir.iter().map(|v| *v as f32).collect::<Vec<f32>>(),
            dir.len(),
            model.device(),
        )?);
    }
    let best_layer = layers
        .iter()
        .max_by(|a, b| {
            a.probe_acc
                .total_cmp(&b.probe_acc)
                .then(b.layer.cmp(&a.layer))
        })
        .map(|c| c.layer)
        .unwrap_or(0);
    Ok(ConceptReport {
        layers,
        n_train: train.len(),
        n_heldout: held.len(),
        best_layer,
        directions,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `μ₊ − μ₋` over `idx`, and the midpoint of the two class means projected on it.
fn mean_difference(x: &[Vec<f64>], y: &[bool], idx: &[usize]) -> (Vec<f64>, f64) {
    let d = x[0].len();
    let (mut mp, mut mn) = (vec![0.0; d], vec![0.0; d]);
    let (mut np, mut nn) = (0.0f64, 0.0f64);
    for &i in idx {
        let (m, n) = if y[i] {
            (&mut mp, &mut np)
        } else {
            (&mut mn, &mut nn)
        };
        for (a, b) in m.iter_mut().zip(&x[i]) {
            *a += b;
        }
        *n += 1.0;
    }
    mp.iter_mut().for_each(|v| *v /= np.max(1.0));
    mn.iter_mut().for_each(|v| *v /= nn.max(1.0));
    let dir: Vec<f64> = mp.iter().zip(&mn).map(|(a, b)| a - b).collect();
    let mid = (dot(&mp, &dir) + dot(&mn, &dir)) / 2.0;
    (dir, mid)
}

fn accuracy(idx: &[usize], y: &[bool], pred: impl Fn(usize) -> bool) -> f64 {
    idx.iter().filter(|&&i| pred(i) == y[i]).count() as f64 / idx.len().max(1) as f64
}

/// Logistic regression on standardised features, full-batch gradient descent.
struct Logistic {
    mean: Vec<f64>,
    std: Vec<f64>,
    w: Vec<f64>,
    b: f64,
}

impl Logistic {
    fn fit(x: &[Vec<f64>], y: &[bool], idx: &[usize], l2: f64, iters: usize) -> Logistic {
        let d = x[0].len();
        let n = idx.len() as f64;
        let mut mean = vec![0.0; d];
        for &i in idx {
            for (m, v) in mean.iter_mut().zip(&x[i]) {
                *m += v / n;
            }
        }
        let mut std = vec![0.0; d];
        for &i in idx {
            for ((s, v), m) in std.iter_mut().zip(&x[i]).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        let std: Vec<f64> = std.iter().map(|s| s.sqrt().max(1e-8)).collect();
        let z: Vec<Vec<f64>> = idx
            .iter()
            .map(|&i| {
                x[i].iter()
                    .zip(&mean)
                    .zip(&std)
                    .map(|((v, m), s)| (v - m) / s)
                    .collect()
            })
            .collect();
        let t: Vec<f64> = idx.iter().map(|&i| f64::from(u8::from(y[i]))).collect();
        let (mut w, mut b) = (vec![0.0; d], 0.0);
        let lr = 0.5;
        for _ in 0..iters {
            let mut gw: Vec<f64> = w.iter().map(|v| l2 * v).collect();
            let mut gb = 0.0;
            for (zi, ti) in z.iter().zip(&t) {
                let p = 1.0 / (1.0 + (-(dot(zi, &w) + b)).exp());
                let e = (p - ti) / n;
                for (g, v) in gw.iter_mut().zip(zi) {
                    *g += e * v;
                }
                gb += e;
            }
            for (wi, g) in w.iter_mut().zip(&gw) {
                *wi -= lr * g;
            }
            b -= lr * gb;
        }
        Logistic { mean, std, w, b }
    }

    fn predict(&self, x: &[f64]) -> bool {
        let s: f64 = x
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .zip(&self.w)
            .map(|(((v, m), s), w)| (v - m) / s * w)
            .sum();
        s + self.b > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_separate_separable_data_and_not_noise() {
        // Two Gaussian-ish clouds along feature 0 vs labels independent of the features.
        let x: Vec<Vec<f64>> = (0..80)
            .map(|i| {
                let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                vec![
                    s * 2.0 + ((i * 7 % 11) as f64 - 5.0) / 10.0,
                    ((i * 13 % 17) as f64 - 8.0) / 4.0,
                ]
            })
            .collect();
        let y: Vec<bool> = (0..80).map(|i| i % 2 == 0).collect();
        let train: Vec<usize> = (0..60).collect();
        let held: Vec<usize> = (60..80).collect();
        let (dir, mid) = mean_difference(&x, &y, &train);
        assert_eq!(accuracy(&held, &y, |i| dot(&x[i], &dir) > mid), 1.0);
        let p = Logistic::fit(&x, &y, &train, 1e-2, 300);
        assert_eq!(accuracy(&held, &y, |i| p.predict(&x[i])), 1.0);
        // Labels unrelated to the features: held-out accuracy near chance.
        let y2: Vec<bool> = (0..80).map(|i| (i * 37 % 7) < 3).collect();
        let p = Logistic::fit(&x, &y2, &train, 1e-2, 300);
        assert!(accuracy(&held, &y2, |i| p.predict(&x[i])) < 0.8);
    }
}
