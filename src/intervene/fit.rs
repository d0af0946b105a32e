//! Fitting interventions on the fit split: steering vectors and ablation directions from
//! mean activation differences, and low-rank circuit breakers trained with candle
//! autograd (AdamW) on a representation-rerouting loss plus a retain loss, as in Circuit
//! Breakers (Zou et al. 2024) with LoReFT's low-rank edit (Wu et al. 2024) as the
//! trainable part.
//!
//! Texts come as a [`Contrast`]: `harmful` (the behaviour to break, e.g. toxic prompts)
//! and `harmless` (text whose processing must not change). Callers build it from
//! [`crate::tasks::load_fit`] only, so no item a gate scores shapes an intervention.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::artifact::{CurvePoint, Training};
use super::{AblateMode, Intervention, LoraEdit, LowRankEdit};
use crate::model::generate::pad_right;
use crate::model::{HookPoint, Hooks, LoadedModel, ModelError};
use crate::trace::activations::{encode_all, pad_mask, text_means};

#[derive(Debug, Clone, Default)]
pub struct Contrast {
    pub harmful: Vec<String>,
    pub harmless: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("fit: {0}")]
    Invalid(String),
}

impl From<candle_core::Error> for FitError {
    fn from(e: candle_core::Error) -> Self {
        FitError::Model(e.into())
    }
}

/// Per hook point, the mean activation over every token but the first of every text
/// (the first too for one-token texts): `[d]`.
pub fn mean_activations(
    model: &LoadedModel,
    texts: &[String],
    points: &[HookPoint],
    max_tokens: usize,
    batch: usize,
) -> Result<BTreeMap<HookPoint, Tensor>, FitError> {
    if texts.is_empty() {
        return Err(FitError::Invalid("no texts to average over".into()));
    }
    let seqs = encode_all(model, texts, max_tokens)?;
    let (means, counts) = text_means(model, &seqs, points, batch)?;
    // Every token weighs the same: per-text means weighted by their token counts.
    let total: usize = counts.iter().sum();
    let w = Tensor::new(
        counts
            .iter()
            .map(|&c| c as f64)
            .collect::<Vec<_>>()
            .as_slice(),
        model.device(),
    )?
    .unsqueeze(1)?;
    means
        .into_iter()
        .map(|(p, m)| {
            let mean = (m.broadcast_mul(&w)?.sum(0)? / total as f64)?.to_dtype(DType::F32)?;
            Ok((p, mean))
        })
        .collect()
}

/// Steering vectors `v = mean(harmless) − mean(harmful)` per site, added with `alpha`.
pub fn fit_offset(
    model: &LoadedModel,
    c: &Contrast,
    sites: &[HookPoint],
    alpha: f64,
    max_tokens: usize,
) -> Result<Intervention, FitError> {
    let (bad, good) = means(model, c, sites, max_tokens)?;
    let sites = sites
        .iter()
        .map(|p| Ok((*p, (&good[p] - &bad[p])?)))
        .collect::<Result<Vec<_>, FitError>>()?;
    Ok(Intervention::Offset { alpha, sites })
}

/// [`fit_offset`] with the strength searched: `v` is fitted on the harmful texts and 70%
/// of the harmless ones; each candidate α is applied to the other 30%, and the largest α
/// whose perplexity there rises by at most `max_increase` (e.g. 0.05) is kept. Returns
/// the intervention and each candidate's perplexity ratio.
pub fn fit_offset_search(
    model: &LoadedModel,
    c: &Contrast,
    sites: &[HookPoint],
    alphas: &[f64],
    max_increase: f64,
    max_tokens: usize,
) -> Result<(Intervention, Vec<(f64, f64)>), FitError> {
    if c.harmless.len() < 4 {
        return Err(FitError::Invalid(format!(
            "searching alpha needs at least 4 harmless texts (got {})",
            c.harmless.len()
        )));
    }
    let cut = c.harmless.len() * 7 / 10;
    let fit_part = Contrast {
        harmful: c.harmful.clone(),
        harmless: c.harmless[..cut].to_vec(),
    };
    let check = encode_all(model, &c.harmless[cut..], max_tokens)?;
    let Intervention::Offset { sites: vs, .. } =
        fit_offset(model, &fit_part, sites, 1.0, max_tokens)?
    else {
        return Err(FitError::Invalid("offset fit returned another kind".into()));
    };
    let base = mean_nll(model, &check, &Hooks::new())?;
    let mut sorted: Vec<f64> = alphas.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut search = Vec::new();
    let mut best = None;
    for a in sorted {
        let iv = Intervention::Offset {
            alpha: a,
            sites: vs.clone(),
        };
        let ratio = (mean_nll(model, &check, &iv.hooks())? - base).exp();
        search.push((a, ratio));
        if ratio <= 1.0 + max_increase {
            best = Some(a);
        }
    }
    let alpha = best.ok_or_else(|| {
        FitError::Invalid(format!(
            "no alpha keeps the held-out perplexity within +{:.0}% (ratios {search:?})",
            max_increase * 100.0
        ))
    })?;
    Ok((Intervention::Offset { alpha, sites: vs }, search))
}

/// Mean next-token negative log-likelihood over every predicted token of `seqs`.
pub fn mean_nll(model: &LoadedModel, seqs: &[Vec<u32>], hooks: &Hooks) -> Result<f64, FitError> {
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let (mut sum, mut n) = (0.0, 0usize);
    for chunk in seqs.chunks(8) {
        let ids = pad_right(chunk, pad, model.device())?;
        let logits = model
            .model
            .forward(&ids, None, hooks)?
            .logits
            .to_dtype(DType::F32)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        for (i, s) in chunk.iter().enumerate() {
            if s.len() < 2 {
                continue;
            }
            let rows = logp.get(i)?.narrow(0, 0, s.len() - 1)?;
            let next = Tensor::new(&s[1..], model.device())?.unsqueeze(1)?;
            let picked = rows.gather(&next, 1)?.sum_all()?.to_scalar::<f32>()? as f64;
            sum -= picked;
            n += s.len() - 1;
        }
    }
    if n == 0 {
        return Err(FitError::Invalid("no tokens to score perplexity on".into()));
    }
    Ok(sum / n as f64)
}

/// Ablation at each site: the harmful-minus-harmless direction projected out, or the
/// activation replaced by its mean over all fit texts, or zero.
pub fn fit_ablate(
    model: &LoadedModel,
    c: &Contrast,
    sites: &[HookPoint],
    mode: AblateMode,
    max_tokens: usize,
) -> Result<Intervention, FitError> {
    if mode == AblateMode::Zero {
        return Ok(Intervention::Ablate {
            mode,
            sites: sites.iter().map(|p| (*p, None)).collect(),
        });
    }
    let (bad, good) = means(model, c, sites, max_tokens)?;
    let sites = sites
        .iter()
        .map(|p| {
            let t = match mode {
                AblateMode::Direction => (&bad[p] - &good[p])?,
                _ => ((&bad[p] + &good[p])? * 0.5)?,
            };
            Ok((*p, Some(t)))
        })
        .collect::<Result<Vec<_>, FitError>>()?;
    Ok(Intervention::Ablate { mode, sites })
}

type Means = BTreeMap<HookPoint, Tensor>;

fn means(
    model: &LoadedModel,
    c: &Contrast,
    sites: &[HookPoint],
    max_tokens: usize,
) -> Result<(Means, Means), FitError> {
    if c.harmful.is_empty() || c.harmless.is_empty() {
        return Err(FitError::Invalid(format!(
            "need harmful and harmless texts (got {} and {})",
            c.harmful.len(),
            c.harmless.len()
        )));
    }
    Ok((
        mean_activations(model, &c.harmful, sites, max_tokens, 8)?,
        mean_activations(model, &c.harmless, sites, max_tokens, 8)?,
    ))
}

/// Scale of LoRA's initial B (its entries' deviation × √rank): the initial update is a
/// small part of the projection's output, enough for the rerouting loss to have a
/// gradient.
pub const LORA_B_INIT: f64 = 0.05;

/// The trainable part of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerForm {
    /// A LoReFT edit of the representation at each site.
    #[default]
    LoReft,
    /// A LoRA update of the weight matrix whose output each site is.
    Lora,
}

/// Hyperparameters of a low-rank circuit breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRankConfig {
    pub form: BreakerForm,
    pub rank: usize,
    pub steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Harmful and harmless texts per step (each).
    pub batch: usize,
    pub max_tokens: usize,
    /// Layer whose residual stream the losses read (default: 5 past the last site,
    /// capped at the last layer), so the breaker must disrupt what comes downstream.
    pub target_layer: Option<usize>,
    /// Weight of the retain loss relative to rerouting (both on Circuit Breakers'
    /// schedule: rerouting fades from 1 to ½, retain grows from 0 to ½ of this).
    pub retain_weight: f64,
    /// Share of texts held out for early stopping.
    pub heldout: f64,
    /// Evaluate the held-out loss every this many steps; stop after `patience` evaluations
    /// without improvement.
    pub eval_every: usize,
    pub patience: usize,
    pub seed: u64,
}

impl Default for LowRankConfig {
    fn default() -> Self {
        LowRankConfig {
            form: BreakerForm::LoReft,
            rank: 4,
            steps: 150,
            lr: 5e-3,
            weight_decay: 0.0,
            batch: 8,
            max_tokens: 48,
            target_layer: None,
            retain_weight: 10.0,
            heldout: 0.15,
            eval_every: 10,
            patience: 4,
            seed: 0,
        }
    }
}

/// Train a LoReFT breaker at `sites` (residual-stream-shaped hook points). Returns the
/// intervention (at its best held-out loss) and its training record.
pub fn fit_low_rank(
    model: &LoadedModel,
    c: &Contrast,
    sites: &[HookPoint],
    cfg: &LowRankConfig,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<(Intervention, Training), FitError> {
    let info = model.model.info();
    let (d, n_layers) = (info.d_model, info.n_layers);
    if sites.is_empty() || cfg.rank == 0 || cfg.steps == 0 || cfg.batch == 0 {
        return Err(FitError::Invalid(
            "sites, rank, steps and batch must be non-empty/positive".into(),
        ));
    }
    let last = sites.iter().filter_map(|p| p.layer()).max().unwrap_or(0);
    let target = cfg.target_layer.unwrap_or((last + 5).min(n_layers - 1));
    if target < last || target >= n_layers {
        return Err(FitError::Invalid(format!(
            "target_layer {target} must lie in {last}..{n_layers} (at or after the last site)"
        )));
    }
    if sites.iter().any(|p| p.layer().is_none()) {
        return Err(FitError::Invalid(
            "a breaker's sites must be inside a block (hook_embed is not)".into(),
        ));
    }
    let first = sites.iter().filter_map(|p| p.layer()).min().unwrap_or(0);
    let dev = model.device().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let (harm, harm_held) = split_heldout(
        encode_all(model, &c.harmful, cfg.max_tokens)?,
        cfg.heldout,
        &mut rng,
    );
    let (keep, keep_held) = split_heldout(
        encode_all(model, &c.harmless, cfg.max_tokens)?,
        cfg.heldout,
        &mut rng,
    );
    if harm.is_empty() || keep.is_empty() {
        return Err(FitError::Invalid(format!(
            "need harmful and harmless texts to train on (got {} and {} after holding out {:.0}%)",
            harm.len(),
            keep.len(),
            cfg.heldout * 100.0
        )));
    }
    // The frozen model's streams never change: computed once, every step then runs only
    // blocks `first..=target` (the first position is the attention sink: its state is
    // huge and nearly the same for every text, so rerouting reads the positions after
    // it; retain reads it too, so the breaker keeps its hands off the sink).
    let span = Span {
        layers: first..target + 1,
    };
    let harm = span.freeze(model, &harm, 1)?;
    let harm_held = span.freeze(model, &harm_held, 1)?;
    let keep = span.freeze(model, &keep, 0)?;
    let keep_held = span.freeze(model, &keep_held, 0)?;
    // LoReFT starts as pyreft does: R with orthonormal rows and W random, so the edit
    // swaps an r-dimensional slice of the stream for a random one (a few percent of its
    // norm). Starting at the identity (R = 0) would put the rerouting cosine at its
    // maximum, where its gradient vanishes: Adam then amplifies float noise into full
    // steps and training escapes along whatever direction rounding picked, a different
    // one under another matmul kernel. LoRA likewise starts near, not at, the identity:
    // B small and random rather than LoRA's B = 0, for the same reason (at B = 0 the
    // rerouting gradient reaching B is exactly zero).
    let mut params: Vec<(HookPoint, [Var; 3])> = Vec::new();
    let mut vars = Vec::new();
    for (k, p) in sites.iter().enumerate() {
        let seed = cfg.seed.wrapping_add(k as u64 + 1);
        let ps = match cfg.form {
            BreakerForm::LoReft => [
                Var::from_tensor(&orthonormal_rows(cfg.rank, d, seed ^ 0x5eed, &dev)?)?,
                Var::from_tensor(&seeded_normal(
                    &[cfg.rank, d],
                    1.0 / (d as f64).sqrt(),
                    seed,
                    &dev,
                )?)?,
                Var::zeros(cfg.rank, DType::F32, &dev)?,
            ],
            BreakerForm::Lora => {
                let d_in = match p {
                    HookPoint::MlpOut(_) => info.d_mlp,
                    HookPoint::AttnOut(_) => info.n_heads * info.d_head,
                    other => {
                        return Err(FitError::Invalid(format!(
                            "{other} is not a LoRA site (hook_mlp_out or hook_attn_out)"
                        )))
                    }
                };
                [
                    Var::from_tensor(&seeded_normal(
                        &[cfg.rank, d_in],
                        1.0 / (d_in as f64).sqrt(),
                        seed,
                        &dev,
                    )?)?,
                    Var::from_tensor(&seeded_normal(
                        &[d, cfg.rank],
                        LORA_B_INIT / (cfg.rank as f64).sqrt(),
                        seed ^ 0xb0b,
                        &dev,
                    )?)?,
                    // Unused third slot keeps one parameter layout for both forms.
                    Var::zeros(1, DType::F32, &dev)?,
                ]
            }
        };
        vars.extend(
            ps.iter()
                .take(if cfg.form == BreakerForm::Lora { 2 } else { 3 })
                .cloned(),
        );
        params.push((*p, ps));
    }
    let form = cfg.form;
    let build = |params: &[(HookPoint, [Var; 3])], detach: bool| -> Intervention {
        let t = |v: &Var| {
            if detach {
                v.as_tensor().detach()
            } else {
                v.as_tensor().clone()
            }
        };
        match form {
            BreakerForm::LoReft => Intervention::LowRank {
                sites: params
                    .iter()
                    .map(|(p, [r, w, b])| {
                        (
                            *p,
                            LowRankEdit {
                                r: t(r),
                                w: t(w),
                                b: t(b),
                            },
                        )
                    })
                    .collect(),
            },
            BreakerForm::Lora => Intervention::Lora {
                sites: params
                    .iter()
                    .map(|(p, [a, b, _])| {
                        (
                            *p,
                            LoraEdit {
                                a: t(a),
                                b: t(b),
                                scale: 1.0,
                            },
                        )
                    })
                    .collect(),
            },
        }
    };
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let start = Instant::now();
    let mut curve = Vec::new();
    let mut best: Option<(f64, Intervention)> = None;
    let mut since_best = 0usize;
    let mut stopped_early = false;
    let mut steps_done = 0;
    let (mut harm_order, mut keep_order): (Vec<usize>, Vec<usize>) =
        ((0..harm.len()).collect(), (0..keep.len()).collect());
    let (mut hi, mut ki) = (0usize, 0usize);
    for step in 0..cfg.steps {
        let frac = step as f64 / (2.0 * cfg.steps as f64);
        let (c_reroute, c_retain) = (1.0 - frac, cfg.retain_weight * frac);
        let hb = harm.rows(&next_batch(&mut harm_order, &mut hi, cfg.batch, &mut rng))?;
        let kb = keep.rows(&next_batch(&mut keep_order, &mut ki, cfg.batch, &mut rng))?;
        let iv = build(&params, false);
        let (reroute, retain) = losses(model, &iv, &span, &hb, &kb)?;
        let loss = ((&reroute * c_reroute)? + (&retain * c_retain)?)?;
        opt.backward_step(&loss)?;
        steps_done = step + 1;
        let lv = loss.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            return Err(FitError::Invalid(format!(
                "loss became {lv} at step {step}; lower lr"
            )));
        }
        let mut parts = BTreeMap::from([
            ("reroute".to_string(), reroute.to_scalar::<f32>()? as f64),
            ("retain".to_string(), retain.to_scalar::<f32>()? as f64),
        ]);
        if (step + 1) % cfg.eval_every == 0 || step + 1 == cfg.steps {
            let held = build(&params, true);
            let (r, k) = losses(model, &held, &span, &harm_held, &keep_held)?;
            // Equal weights: the held-out score does not drift with the schedule.
            let h = r.to_scalar::<f32>()? as f64
                + cfg.retain_weight * 0.5 * k.to_scalar::<f32>()? as f64;
            parts.insert("heldout".into(), h);
            if best.as_ref().is_none_or(|(b, _)| h < *b) {
                best = Some((h, held));
                since_best = 0;
            } else {
                since_best += 1;
            }
            curve.push(CurvePoint {
                step: step + 1,
                loss: lv,
                parts,
            });
            if since_best >= cfg.patience {
                stopped_early = true;
                break;
            }
        } else {
            curve.push(CurvePoint {
                step: step + 1,
                loss: lv,
                parts,
            });
        }
        progress(step + 1, cfg.steps, lv);
    }
    let iv = match best {
        Some((_, iv)) => iv,
        None => build(&params, true),
    };
    Ok((
        iv,
        Training {
            steps: steps_done,
            seconds: start.elapsed().as_secs_f64(),
            seed: cfg.seed,
            stopped_early,
            curve,
        },
    ))
}

/// The blocks a breaker's loss runs through: from its first site's block to the layer
/// the loss reads.
struct Span {
    layers: std::ops::Range<usize>,
}

/// Texts as a breaker's training sees them, right-padded to a common length with
/// zeros: the stream entering the span `[n, t, d]`, the frozen model's stream leaving
/// it `[n, t, d]`, and which positions count `[n, t]`.
struct Frozen {
    pre: Tensor,
    orig: Tensor,
    mask: Tensor,
    lens: Vec<usize>,
}

impl Span {
    /// One full forward pass per text, reading the stream into and out of the span;
    /// positions before `from` (and padding) are masked.
    fn freeze(
        &self,
        model: &LoadedModel,
        seqs: &[Vec<u32>],
        from: usize,
    ) -> Result<Frozen, FitError> {
        let dev = model.device();
        let (into, out) = (
            HookPoint::ResidPre(self.layers.start),
            HookPoint::ResidPost(self.layers.end - 1),
        );
        let pad = model.tokenizer.eos_id.unwrap_or(0);
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let hooks = Hooks::new().read(into).read(out);
        let (mut pre, mut orig) = (Vec::new(), Vec::new());
        for chunk in seqs.chunks(8) {
            let ids = pad_right(chunk, pad, dev)?;
            let o = model
                .model
                .forward_at(&ids, None, &hooks, crate::model::LogitsAt::Last)?;
            for (p, acc) in [(into, &mut pre), (out, &mut orig)] {
                let a = o
                    .cache
                    .get(p)
                    .ok_or_else(|| FitError::Invalid(format!("hook {p} did not fire")))?
                    .to_dtype(DType::F32)?;
                acc.push(pad_positions(&a, t)?);
            }
        }
        Ok(Frozen {
            pre: Tensor::cat(&pre, 0)?,
            orig: Tensor::cat(&orig, 0)?,
            mask: pad_mask(seqs, from, dev)?.squeeze(2)?,
            lens: seqs.iter().map(Vec::len).collect(),
        })
    }
}

/// `[b, t', d]` → `[b, t, d]`, zeros after `t'`.
fn pad_positions(a: &Tensor, t: usize) -> candle_core::Result<Tensor> {
    let (b, have, d) = a.dims3()?;
    if have == t {
        return Ok(a.clone());
    }
    let z = Tensor::zeros((b, t - have, d), a.dtype(), a.device())?;
    Tensor::cat(&[a, &z], 1)
}

impl Frozen {
    fn len(&self) -> usize {
        self.lens.len()
    }

    /// The texts at `idx`, cut to the longest of them.
    fn rows(&self, idx: &[usize]) -> Result<Frozen, FitError> {
        let t = idx.iter().map(|&i| self.lens[i]).max().unwrap_or(1);
        let ix = Tensor::new(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(),
            self.pre.device(),
        )?;
        let take = |x: &Tensor| x.index_select(&ix, 0)?.narrow(1, 0, t);
        Ok(Frozen {
            pre: take(&self.pre)?,
            orig: take(&self.orig)?,
            mask: take(&self.mask)?,
            lens: idx.iter().map(|&i| self.lens[i]).collect(),
        })
    }
}

/// Rerouting (mean over harmful tokens of ReLU(cos(h_breaker, h_original))) and retain
/// (mean over harmless tokens of ‖h_breaker − h_original‖ / ‖h_original‖) where the
/// span ends.
fn losses(
    model: &LoadedModel,
    iv: &Intervention,
    span: &Span,
    harmful: &Frozen,
    harmless: &Frozen,
) -> Result<(Tensor, Tensor), FitError> {
    let hooks = iv.hooks();
    let run = |f: &Frozen| -> Result<Tensor, FitError> {
        Ok(model
            .model
            .forward_blocks(&f.pre, span.layers.clone(), &hooks)?
            .0)
    };
    let masked_mean = |x: &Tensor, mask: &Tensor| -> Result<Tensor, FitError> {
        Ok((x.mul(mask)?.sum_all()? / mask.sum_all()?.to_scalar::<f32>()? as f64)?)
    };
    let norm = |x: &Tensor| x.sqr()?.sum(D::Minus1)?.sqrt();
    let (new, orig) = (run(harmful)?, &harmful.orig);
    let dot = (&new * orig)?.sum(D::Minus1)?;
    let cos = (dot / ((norm(&new)? * norm(orig)?)? + 1e-6)?)?;
    let reroute = masked_mean(&cos.relu()?, &harmful.mask)?;
    let (new, orig) = (run(harmless)?, &harmless.orig);
    let rel = (norm(&(&new - orig)?)? / (norm(orig)? + 1e-6)?)?;
    let retain = masked_mean(&rel, &harmless.mask)?;
    Ok((reroute, retain))
}

fn split_heldout(
    mut v: Vec<Vec<u32>>,
    share: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    v.shuffle(rng);
    let n_held = ((v.len() as f64) * share).round() as usize;
    let n_held = n_held
        .min(v.len().saturating_sub(1))
        .max(usize::from(v.len() > 1));
    let held = v.split_off(v.len() - n_held);
    (v, held)
}

/// The next `n` items of `v`, reshuffling at the end of each epoch.
fn next_batch(v: &mut [usize], at: &mut usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.min(v.len()) {
        if *at >= v.len() {
            v.shuffle(rng);
            *at = 0;
        }
        out.push(v[*at]);
        *at += 1;
    }
    out
}

pub(crate) fn seeded_normal(
    shape: &[usize],
    std: f64,
    seed: u64,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, dev)
}

/// `r` seeded random rows of length `d`, orthonormalised (Gram–Schmidt in f64).
fn orthonormal_rows(r: usize, d: usize, seed: u64, dev: &Device) -> Result<Tensor, FitError> {
    if r > d {
        return Err(FitError::Invalid(format!(
            "rank {r} exceeds the stream width {d}"
        )));
    }
    let raw = seeded_normal(&[r, d], 1.0, seed, dev)?.to_vec2::<f32>()?;
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(r);
    for v in raw {
        let mut v: Vec<f64> = v.into_iter().map(f64::from).collect();
        for u in &rows {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= norm);
        rows.push(v);
    }
    let flat: Vec<f32> = rows.into_iter().flatten().map(|a| a as f32).collect();
    Ok(Tensor::from_vec(flat, (r, d), dev)?)
}
