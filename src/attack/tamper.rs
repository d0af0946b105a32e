//! Tamper attacks: a few steps of fine-tuning on harmful text, with the intervention in
//! place, and what is left of its protection after each budget. Two attackers:
//!
//! - [`TamperParams::Model`]: the model's weights the intervention does not touch, as a
//!   user fine-tuning a deployed model would (through LoRA adapters on every MLP down
//!   projection not already an intervention site, the usual way such attacks are run:
//!   Lermen et al. 2023, "LoRA Fine-tuning Efficiently Undoes Safety Training");
//! - [`TamperParams::Intervention`]: the intervention's own tensors (the steering
//!   vector, the breaker's R, W, b), as an attacker holding the artefact would.
//!
//! The loss is the harmful continuations' NLL, as for the other attacks; AdamW, seeded.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::intervene::{Intervention, LoraEdit};
use crate::model::{HookPoint, Hooks, LoadedModel};

use super::targets::{mean_nll, Batches, Encoded, Target};
use super::AttackError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperParams {
    Model,
    Intervention,
}

impl TamperParams {
    pub fn name(self) -> &'static str {
        match self {
            TamperParams::Model => "model",
            TamperParams::Intervention => "intervention",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TamperConfig {
    pub params: TamperParams,
    /// Fine-tuning steps (the attacker's budget).
    pub steps: usize,
    pub lr: f64,
    /// Examples per step.
    pub batch: usize,
    /// LoRA rank of the model's adapters ([`TamperParams::Model`]).
    pub rank: usize,
    pub max_target_tokens: usize,
    pub seed: u64,
}

impl Default for TamperConfig {
    fn default() -> Self {
        TamperConfig {
            params: TamperParams::Model,
            steps: 20,
            lr: 1e-3,
            batch: 4,
            rank: 8,
            max_target_tokens: 16,
            seed: 0,
        }
    }
}

/// A tampered model: the intervention as the attacker left it, and the adapters the
/// attacker trained on the model (empty under [`TamperParams::Intervention`]).
#[derive(Debug, Clone)]
pub struct TamperFit {
    pub intervention: Intervention,
    pub adapters: Intervention,
    /// Mean NLL per target token at each step, before the step's update.
    pub curve: Vec<f64>,
    pub nll_before: f64,
    pub nll_after: f64,
    pub seconds: f64,
}

impl TamperFit {
    pub fn hooks(&self) -> Hooks {
        tampered_hooks(&self.intervention, &self.adapters)
    }

    /// Tensors to cache: the intervention's as `iv.<name>`, the adapters' as
    /// `adapter.<name>`.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        for (k, v) in self.intervention.tensors() {
            m.insert(format!("iv.{k}"), v);
        }
        for (k, v) in self.adapters.tensors() {
            m.insert(format!("adapter.{k}"), v);
        }
        m
    }

    /// The inverse of [`TamperFit::tensors`], onto `defence` and the adapter sites of
    /// `model` under `cfg`.
    pub fn from_tensors(
        model: &LoadedModel,
        defence: &Intervention,
        cfg: &TamperConfig,
        t: &BTreeMap<String, Tensor>,
    ) -> Result<(Intervention, Intervention), AttackError> {
        let strip = |prefix: &str| -> BTreeMap<String, Tensor> {
            t.iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect()
        };
        let iv = defence
            .with_tensors(&strip("iv."))
            .map_err(AttackError::Invalid)?;
        let adapters = adapter_template(model, defence, cfg)?
            .with_tensors(&strip("adapter."))
            .map_err(AttackError::Invalid)?;
        Ok((iv, adapters))
    }
}

/// The hooks of a tampered model: the intervention as the attacker left it, then the
/// attacker's adapters.
pub fn tampered_hooks(intervention: &Intervention, adapters: &Intervention) -> Hooks {
    let mut h = intervention.hooks();
    adapters.add_to(&mut h);
    h
}

/// The attacker's adapters before training: LoRA on each layer's MLP down projection
/// that `defence` does not already write, A random and B = 0 (LoRA's own start: the
/// identity; the NLL's gradient reaches B there, unlike a rerouting cosine's).
fn adapter_template(
    model: &LoadedModel,
    defence: &Intervention,
    cfg: &TamperConfig,
) -> Result<Intervention, AttackError> {
    if cfg.params != TamperParams::Model {
        return Ok(Intervention::None);
    }
    let info = model.model.info();
    let dev = model.device();
    let taken = defence.points();
    let mut sites = Vec::new();
    for l in 0..info.n_layers {
        let p = HookPoint::MlpOut(l);
        if taken.contains(&p) {
            continue;
        }
        let a = crate::intervene::fit::seeded_normal(
            &[cfg.rank, info.d_mlp],
            1.0 / (info.d_mlp as f64).sqrt(),
            cfg.seed.wrapping_add(l as u64),
            dev,
        )?;
        let b = Tensor::zeros((info.d_model, cfg.rank), DType::F32, dev)?;
        sites.push((p, LoraEdit { a, b, scale: 1.0 }));
    }
    Ok(Intervention::Lora { sites })
}

/// Fine-tune against `defence` on `targets` for `cfg.steps` steps.
pub fn fit_tamper(
    model: &LoadedModel,
    defence: &Intervention,
    targets: &[Target],
    cfg: &TamperConfig,
    progress: impl FnMut(usize, usize, f64),
) -> Result<TamperFit, AttackError> {
    let mut fits = fit_tamper_budgets(model, defence, targets, cfg, &[cfg.steps], progress)?;
    fits.remove(0)
}

/// One fine-tuning run against `defence`, read off after each of `budgets` steps
/// (`cfg.steps` is ignored): the fit at budget N is the one [`fit_tamper`] gives for N
/// steps, bit for bit, because the batches are drawn in the same seeded order and AdamW
/// has no schedule that depends on the total. So the budgets of a tamper curve (5, 20,
/// 50) cost the largest one's steps, not their sum. Fits come back in the order of
/// `budgets`; each one's `seconds` is the time from the start to its checkpoint. A run
/// whose loss stops being finite keeps the budgets it reached; the later ones are that
/// error, as their own runs would have been.
pub fn fit_tamper_budgets(
    model: &LoadedModel,
    defence: &Intervention,
    targets: &[Target],
    cfg: &TamperConfig,
    budgets: &[usize],
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Vec<Result<TamperFit, AttackError>>, AttackError> {
    if cfg.batch == 0 || (cfg.params == TamperParams::Model && cfg.rank == 0) {
        return Err(AttackError::Invalid(
            "batch (and rank, for model tampering) must be at least 1".into(),
        ));
    }
    if budgets.is_empty() {
        return Err(AttackError::Invalid("no tamper budget to fit".into()));
    }
    let began = Instant::now();
    let examples = Encoded::all(model, targets, cfg.max_target_tokens)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let template = adapter_template(model, defence, cfg)?;
    // Trainable copies of whichever tensors the attacker holds.
    let (iv_vars, ad_vars): (BTreeMap<String, Var>, BTreeMap<String, Var>) = {
        let vars = |m: BTreeMap<String, Tensor>| -> Result<BTreeMap<String, Var>, AttackError> {
            m.into_iter()
                .map(|(k, t)| Ok((k, Var::from_tensor(&t.to_dtype(DType::F32)?)?)))
                .collect()
        };
        match cfg.params {
            TamperParams::Intervention => (vars(defence.tensors())?, BTreeMap::new()),
            TamperParams::Model => (BTreeMap::new(), vars(template.tensors())?),
        }
    };
    let build = |detach: bool| -> Result<(Intervention, Intervention), AttackError> {
        let t = |m: &BTreeMap<String, Var>| -> Result<BTreeMap<String, Tensor>, AttackError> {
            m.iter()
                .map(|(k, v)| {
                    let t = v.as_tensor();
                    // AdamW updates a Var's storage in place, so a checkpoint that only
                    // detached would move on with training: copy it, then detach the
                    // copy (a copy of a Var is tracked, and tracked tensors keep the
                    // slower autograd paths of the forward pass).
                    let t = if detach {
                        t.copy()?.detach()
                    } else {
                        t.clone()
                    };
                    Ok((k.clone(), t))
                })
                .collect()
        };
        let iv = match cfg.params {
            TamperParams::Intervention => defence.with_tensors(&t(&iv_vars)?),
            TamperParams::Model => Ok(defence.clone()),
        }
        .map_err(AttackError::Invalid)?;
        let ad = template
            .with_tensors(&t(&ad_vars)?)
            .map_err(AttackError::Invalid)?;
        Ok((iv, ad))
    };
    let nll_before = mean_nll(model, &defence.hooks(), &examples)?.to_scalar::<f32>()? as f64;
    let last = budgets.iter().copied().max().unwrap_or(0);
    let mut checkpoints: BTreeMap<usize, TamperFit> = BTreeMap::new();
    let checkpoint = |curve: &[f64]| -> Result<TamperFit, AttackError> {
        let (intervention, adapters) = build(true)?;
        let nll_after = mean_nll(model, &tampered_hooks(&intervention, &adapters), &examples)?
            .to_scalar::<f32>()? as f64;
        Ok(TamperFit {
            intervention,
            adapters,
            curve: curve.to_vec(),
            nll_before,
            nll_after,
            seconds: began.elapsed().as_secs_f64(),
        })
    };
    let all: Vec<Var> = iv_vars.values().chain(ad_vars.values()).cloned().collect();
    let mut curve = Vec::with_capacity(last);
    let mut diverged: Option<String> = None;
    if budgets.contains(&0) || all.is_empty() {
        // Nothing to train (no steps, or an intervention without tensors): every budget
        // is the defended model as it stands.
        let fit = checkpoint(&curve)?;
        for &b in budgets {
            if b == 0 || all.is_empty() {
                checkpoints.insert(b, fit.clone());
            }
        }
    }
    if !all.is_empty() && last > 0 {
        let mut opt = AdamW::new(
            all,
            ParamsAdamW {
                lr: cfg.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let mut batches = Batches::new(examples.len(), &mut rng);
        for step in 0..last {
            let batch: Vec<Encoded> = batches
                .next(cfg.batch, &mut rng)
                .into_iter()
                .map(|i| examples[i].clone())
                .collect();
            let (iv, ad) = build(false)?;
            let loss = mean_nll(model, &tampered_hooks(&iv, &ad), &batch)?;
            let lv = loss.to_scalar::<f32>()? as f64;
            if !lv.is_finite() {
                diverged = Some(format!("tamper loss became {lv} at step {step}; lower lr"));
                break;
            }
            opt.backward_step(&loss)?;
            curve.push(lv);
            progress(step + 1, last, lv);
            if budgets.contains(&(step + 1)) {
                checkpoints.insert(step + 1, checkpoint(&curve)?);
            }
        }
    }
    Ok(budgets
        .iter()
        .map(|b| {
            checkpoints.get(b).cloned().ok_or_else(|| {
                AttackError::Invalid(
                    diverged
                        .clone()
                        .unwrap_or_else(|| format!("tamper budget {b} was not reached")),
                )
            })
        })
        .collect())
}
