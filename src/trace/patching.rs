//! Activation patching and its first-order approximation, attribution patching (Nanda
//! 2023; Syed et al. 2023), between a clean and a corrupted prompt of equal length.
//!
//! A site's patching effect is how much of the metric's clean–corrupted gap its clean
//! value restores in the corrupted run: `(m(corrupt, site ← clean) − m(corrupt)) /
//! (m(clean) − m(corrupt))`. Attribution patching estimates every site at once from one
//! forward and one backward pass on the corrupted run: `(a_clean − a_corrupt) · ∂m/∂a`,
//! summed over the site's features, divided by the same gap. The gradient comes from
//! candle autograd through a zero `Var` added at each hook point.

use std::collections::BTreeMap;

use candle_core::{DType, IndexOp, Tensor, Var, D};
use serde::Serialize;

use super::causal::Restore;
use crate::model::hooks::AddTensor;
use crate::model::{HookPoint, Hooks, LoadedModel, LogitsAt, ModelError, Writer};

/// What a behaviour is measured by, at the last position of the prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// `logit(good) − logit(bad)` (e.g. the right name minus the wrong one).
    LogitDiff { good: u32, bad: u32 },
    /// `log p(target)`.
    LogProb { target: u32 },
}

impl Metric {
    /// The metric of each batch row, differentiable: `[b]`.
    pub fn of(&self, logits: &Tensor) -> candle_core::Result<Tensor> {
        let t = logits.dim(1)?;
        let last = logits.i((.., t - 1))?.to_dtype(DType::F32)?;
        match *self {
            Metric::LogitDiff { good, bad } => {
                last.i((.., good as usize))? - last.i((.., bad as usize))?
            }
            Metric::LogProb { target } => {
                candle_nn::ops::log_softmax(&last, D::Minus1)?.i((.., target as usize))
            }
        }
    }
}

/// One patch: a hook point, optionally one position, optionally one unit (a head of
/// `attn.hook_z`, a neuron of `mlp.hook_post`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PatchSite {
    #[serde(serialize_with = "crate::trace::patching::ser_point")]
    pub point: HookPoint,
    pub position: Option<usize>,
    pub unit: Option<usize>,
}

pub(crate) fn ser_point<S: serde::Serializer>(p: &HookPoint, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string())
}

/// Families of sites, as in the literature's sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteFamily {
    /// Block outputs, layer × position.
    Resid,
    /// MLP outputs, layer × position.
    Mlp,
    /// Attention outputs, layer × position.
    Attn,
    /// Attention heads (`attn.hook_z`), layer × head, all positions.
    Heads,
    /// MLP neurons (`mlp.hook_post`) of one layer at the last position.
    Neurons { layer: usize },
}

pub fn sites(model: &LoadedModel, family: SiteFamily, t: usize) -> Vec<PatchSite> {
    let info = model.model.info();
    let per_pos = |f: fn(usize) -> HookPoint| -> Vec<PatchSite> {
        (0..info.n_layers)
            .flat_map(|l| {
                (0..t).map(move |p| PatchSite {
                    point: f(l),
                    position: Some(p),
                    unit: None,
                })
            })
            .collect()
    };
    match family {
        SiteFamily::Resid => per_pos(HookPoint::ResidPost),
        SiteFamily::Mlp => per_pos(HookPoint::MlpOut),
        SiteFamily::Attn => per_pos(HookPoint::AttnOut),
        SiteFamily::Heads => (0..info.n_layers)
            .flat_map(|l| {
                (0..info.n_heads).map(move |h| PatchSite {
                    point: HookPoint::AttnZ(l),
                    position: None,
                    unit: Some(h),
                })
            })
            .collect(),
        SiteFamily::Neurons { layer } => (0..info.d_mlp)
            .map(|u| PatchSite {
                point: HookPoint::MlpPost(layer),
                position: Some(t - 1),
                unit: Some(u),
            })
            .collect(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("patching: {0}")]
    Invalid(String),
}

impl From<candle_core::Error> for PatchError {
    fn from(e: candle_core::Error) -> Self {
        PatchError::Model(e.into())
    }
}

/// A clean/corrupted pair ready to patch: both runs' activations at every point the
/// sites name.
pub struct Patcher<'m> {
    model: &'m LoadedModel,
    pub clean_ids: Vec<u32>,
    pub corrupt_ids: Vec<u32>,
    pub metric: Metric,
    pub m_clean: f64,
    pub m_corrupt: f64,
    clean: BTreeMap<HookPoint, Tensor>,
}

impl<'m> Patcher<'m> {
    pub fn new(
        model: &'m LoadedModel,
        clean: &str,
        corrupt: &str,
        metric: Metric,
        points: &[HookPoint],
    ) -> Result<Self, PatchError> {
        let clean_ids = model.encode(clean)?;
        let corrupt_ids = model.encode(corrupt)?;
        if clean_ids.len() != corrupt_ids.len() {
            return Err(PatchError::Invalid(format!(
                "clean and corrupted prompts must have the same number of tokens ({} vs {})",
                clean_ids.len(),
                corrupt_ids.len()
            )));
        }
        let hooks = Hooks::new().read_all(points.iter().copied());
        let out = model.forward_ids(&clean_ids, &hooks)?;
        let m_clean = metric.of(&out.logits)?.to_vec1::<f32>()?[0] as f64;
        let clean_acts = points
            .iter()
            .map(|p| {
                Ok((
                    *p,
                    out.cache
                        .get(*p)
                        .cloned()
                        .ok_or_else(|| PatchError::Invalid(format!("{p} did not fire")))?,
                ))
            })
            .collect::<Result<_, PatchError>>()?;
        let out = model.forward_ids(&corrupt_ids, &Hooks::new())?;
        let m_corrupt = metric.of(&out.logits)?.to_vec1::<f32>()?[0] as f64;
        Ok(Patcher {
            model,
            clean_ids,
            corrupt_ids,
            metric,
            m_clean,
            m_corrupt,
            clean: clean_acts,
        })
    }

    fn gap(&self) -> f64 {
        self.m_clean - self.m_corrupt
    }

    /// Real activation patching, one site per batch row: normalised effects.
    pub fn patch(&self, sites: &[PatchSite], rows_per_pass: usize) -> Result<Vec<f64>, PatchError> {
        let sets: Vec<Vec<PatchSite>> = sites.iter().map(|s| vec![*s]).collect();
        self.patch_sets(&sets, rows_per_pass)
    }

    /// Patch each set of sites jointly (one batch row per set): normalised effects.
    pub fn patch_sets(
        &self,
        sets: &[Vec<PatchSite>],
        rows_per_pass: usize,
    ) -> Result<Vec<f64>, PatchError> {
        let mut out = Vec::with_capacity(sets.len());
        for chunk in sets.chunks(rows_per_pass.max(1)) {
            out.extend(self.patch_rows(chunk)?);
        }
        Ok(out)
    }

    fn patch_rows(&self, sets: &[Vec<PatchSite>]) -> Result<Vec<f64>, PatchError> {
        let rows = sets.len();
        let dev = self.model.device();
        let t = self.corrupt_ids.len();
        let ids = Tensor::new(self.corrupt_ids.as_slice(), dev)?
            .unsqueeze(0)?
            .repeat((rows, 1))?;
        let mut hooks = Hooks::new();
        let points: std::collections::BTreeSet<HookPoint> =
            sets.iter().flatten().map(|s| s.point).collect();
        for p in points {
            let src = self
                .clean
                .get(&p)
                .ok_or_else(|| PatchError::Invalid(format!("no clean activation at {p}")))?;
            let units = unit_count(src, p);
            let mut mask = vec![0f32; rows * t * units];
            for (r, s) in sets
                .iter()
                .enumerate()
                .flat_map(|(r, set)| set.iter().map(move |s| (r, s)))
            {
                if s.point != p {
                    continue;
                }
                for pos in 0..t {
                    if s.position.is_some_and(|q| q != pos) {
                        continue;
                    }
                    for u in 0..units {
                        if units == 1 || s.unit.is_none_or(|v| v == u) {
                            mask[(r * t + pos) * units + u] = 1.0;
                        }
                    }
                }
            }
            let mask = match p.unit_axis() {
                crate::model::hooks::UnitAxis::Head => {
                    Tensor::from_vec(mask, (rows, t, units, 1), dev)?
                }
                _ => Tensor::from_vec(mask, (rows, t, units), dev)?,
            };
            hooks.push_writer(Writer::new(
                p,
                Restore {
                    clean: src.clone(),
                    mask,
                },
            ));
        }
        let logits = self
            .model
            .model
            .forward_at(&ids, None, &hooks, LogitsAt::Last)?
            .logits;
        let m = self
            .metric
            .of(&logits)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        Ok(m.into_iter()
            .map(|x| (x - self.m_corrupt) / self.gap())
            .collect())
    }

    /// Attribution patching: every site from one forward and one backward pass.
    pub fn attribute(&self, sites: &[PatchSite]) -> Result<Vec<f64>, PatchError> {
        let points: std::collections::BTreeSet<HookPoint> = sites.iter().map(|s| s.point).collect();
        let mut hooks = Hooks::new();
        let mut vars = BTreeMap::new();
        for p in &points {
            let shape = self.clean[p].shape().clone();
            let v = Var::zeros(shape, DType::F32, self.model.device())?;
            hooks.push_writer(Writer::new(*p, AddTensor(v.as_tensor().clone())));
            vars.insert(*p, v);
        }
        let read = Hooks::new().read_all(points.iter().copied());
        let corrupt = self.model.forward_ids(&self.corrupt_ids, &read)?;
        let out = self.model.forward_ids(&self.corrupt_ids, &hooks)?;
        let m = self.metric.of(&out.logits)?.sum_all()?;
        let grads = m.backward()?;
        let mut out = Vec::with_capacity(sites.len());
        for s in sites {
            let g = grads
                .get(vars[&s.point].as_tensor())
                .ok_or_else(|| PatchError::Invalid(format!("no gradient at {}", s.point)))?;
            let a_corrupt = corrupt
                .cache
                .get(s.point)
                .ok_or_else(|| PatchError::Invalid(format!("{} did not fire", s.point)))?;
            let diff = (&self.clean[&s.point] - a_corrupt)?;
            let mut prod = (diff * g)?.i(0)?; // [t, ...]
            if let Some(pos) = s.position {
                prod = prod.narrow(0, pos, 1)?;
            }
            if let Some(u) = s.unit {
                prod = prod.narrow(1, u, 1)?;
            }
            out.push(prod.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? / self.gap());
        }
        Ok(out)
    }
}

fn unit_count(src: &Tensor, p: HookPoint) -> usize {
    match p {
        HookPoint::AttnZ(_) | HookPoint::AttnQ(_) | HookPoint::AttnK(_) | HookPoint::AttnV(_) => {
            src.dims()[2]
        }
        HookPoint::MlpPost(_) | HookPoint::MlpPre(_) => src.dims()[2],
        _ => 1,
    }
}

/// Spearman's rank correlation (average ranks for ties).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let ra = ranks(a);
    let rb = ranks(b);
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}
