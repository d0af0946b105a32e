//! The embedding-space attack: a short soft prompt (free input embeddings, not tokens)
//! optimised with autograd to make the model under test, intervention included, continue
//! harmful prompts with harmful text. It is adaptive: fitted against each intervention,
//! as an attacker who knows the defence would (Schwinn et al. 2024 break Circuit Breakers
//! this way).
//!
//! The attack sits in front of a prompt as `positions` placeholder tokens, right after
//! the BOS token when the model adds one, whose input embeddings [`SoftPrefix`] replaces.
//! Being a writer at `hook_embed` on absolute positions, it applies unchanged in scoring
//! and in KV-cache generation.

use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::intervene::Intervention;
use crate::model::hooks::{Edit, EditCtx};
use crate::model::{HookPoint, Hooks, LoadedModel, Writer};

use super::targets::{mean_nll, Batches, Encoded, Target};
use super::AttackError;

/// Replaces the input embeddings at positions `start..start + k` with `embeds` (`[k, d]`)
/// and leaves every other position alone.
#[derive(Debug, Clone)]
pub struct SoftPrefix {
    pub embeds: Tensor,
    pub start: usize,
}

impl SoftPrefix {
    pub fn len(&self) -> usize {
        self.embeds.dims().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the soft prompt goes for `model`: after its BOS token when it adds one.
    pub fn start_for(model: &LoadedModel) -> usize {
        usize::from(model.tokenizer.add_bos && model.tokenizer.bos_id.is_some())
    }

    /// `ids` (as [`LoadedModel::encode`] gives them) with the placeholder tokens the soft
    /// prompt overwrites inserted at its start.
    pub fn insert_placeholders(&self, ids: &[u32]) -> Vec<u32> {
        let at = self.start.min(ids.len());
        let mut out = Vec::with_capacity(ids.len() + self.len());
        out.extend_from_slice(&ids[..at]);
        out.extend(std::iter::repeat_n(PLACEHOLDER, self.len()));
        out.extend_from_slice(&ids[at..]);
        out
    }

    /// The writer that puts the soft prompt in place.
    pub fn writer(&self) -> Writer {
        Writer::new(HookPoint::Embed, self.clone())
    }

    /// `hooks` (an intervention's) with the soft prompt in front of them.
    pub fn with(&self, hooks: &Hooks) -> Hooks {
        let mut h = Hooks::new().write(self.writer());
        for w in hooks.writers() {
            h.push_writer(w.clone());
        }
        for r in hooks.readers() {
            h = h.read(*r);
        }
        h
    }
}

/// The token the placeholders are spelt with. Its embedding never reaches the model (the
/// soft prompt replaces it); id 0 exists in every vocabulary.
pub const PLACEHOLDER: u32 = 0;

impl Edit for SoftPrefix {
    fn apply(&self, x: &Tensor, ctx: &EditCtx) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let end = self.start + self.len();
        let (from, to) = (ctx.offset.max(self.start), (ctx.offset + t).min(end));
        if from >= to {
            return Ok(x.clone());
        }
        // This call's positions from..to are soft; the rest keep their embeddings.
        let soft = self
            .embeds
            .narrow(0, from - self.start, to - from)?
            .to_dtype(x.dtype())?
            .unsqueeze(0)?
            .broadcast_as((b, to - from, d))?;
        let mut parts = Vec::with_capacity(3);
        if from > ctx.offset {
            parts.push(x.narrow(1, 0, from - ctx.offset)?);
        }
        parts.push(soft);
        if to < ctx.offset + t {
            parts.push(x.narrow(1, to - ctx.offset, ctx.offset + t - to)?);
        }
        Tensor::cat(&parts, 1)
    }
}

/// How the soft prompt is fitted.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingAttackConfig {
    /// Soft prompt length.
    pub positions: usize,
    /// AdamW steps (the attacker's budget).
    pub steps: usize,
    pub lr: f64,
    /// Examples per step.
    pub batch: usize,
    /// Target tokens per example (the rest of a harmful text is cut).
    pub max_target_tokens: usize,
    pub seed: u64,
}

impl Default for EmbeddingAttackConfig {
    fn default() -> Self {
        EmbeddingAttackConfig {
            positions: 20,
            steps: 60,
            lr: 1e-2,
            batch: 4,
            max_target_tokens: 16,
            seed: 0,
        }
    }
}

/// A fitted attack and how the fit went.
#[derive(Debug, Clone)]
pub struct AttackFit {
    pub prefix: SoftPrefix,
    /// Mean target negative log-likelihood per token of each step's minibatch.
    pub curve: Vec<f64>,
    /// The same over all targets without the attack (the soft prompt's initial value).
    pub nll_before: f64,
    /// The same over all targets under the returned prompt: the best of the checkpoints.
    pub nll_after: f64,
    pub seconds: f64,
}

/// Steps between the checkpoints at which the attacker scores its soft prompt on all
/// its targets and keeps the best. Adam at a high rate can climb out of a good prompt
/// (one fit against a steering offset went from 4.6 to 11.6 nats mid-run and ended at
/// 6.4, above where it began), and an attacker who kept such a prompt would make the
/// defence look stronger than it is.
const CHECK_EVERY: usize = 5;

/// Fit a soft prompt of `cfg.positions` embeddings against `model` under `defence` (the
/// intervention under test; [`Intervention::None`] for the unprotected model) that
/// minimises the negative log-likelihood of each target's continuation after its prompt.
pub fn fit_embedding_attack(
    model: &LoadedModel,
    defence: &Intervention,
    targets: &[Target],
    cfg: &EmbeddingAttackConfig,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<AttackFit, AttackError> {
    if cfg.positions == 0 || cfg.steps == 0 || cfg.batch == 0 {
        return Err(AttackError::Invalid(
            "positions, steps and batch must be at least 1".into(),
        ));
    }
    let dev = model.device().clone();
    let start = SoftPrefix::start_for(model);
    // The initial soft prompt: the embeddings of random vocabulary tokens, as a token
    // prompt would start (GCG starts from real tokens too), at the model's input scale.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let emb = model.model.token_embeddings();
    let vocab = emb.dim(0)?;
    let picks: Vec<u32> = (0..cfg.positions)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let init = (emb
        .index_select(&Tensor::new(picks.as_slice(), emb.device())?, 0)?
        .to_dtype(DType::F32)?
        .to_device(&dev)?
        * model.model.embed_scale())?;
    let soft = Var::from_tensor(&init)?;
    let defence_hooks = defence.hooks();

    // Each example with the placeholders the soft prompt overwrites.
    let placeholders = vec![PLACEHOLDER; cfg.positions];
    let examples: Vec<Encoded> = Encoded::all(model, targets, cfg.max_target_tokens)?
        .iter()
        .map(|e| e.with_inserted(start, &placeholders))
        .collect();

    // Mean NLL per target token of `batch` under the soft prompt `embeds`.
    let nll = |embeds: &Tensor, batch: &[usize]| -> Result<Tensor, AttackError> {
        let prefix = SoftPrefix {
            embeds: embeds.clone(),
            start,
        };
        let chosen: Vec<Encoded> = batch.iter().map(|&i| examples[i].clone()).collect();
        mean_nll(model, &prefix.with(&defence_hooks), &chosen)
    };

    let all: Vec<usize> = (0..examples.len()).collect();
    let nll_before = nll(&init, &all)?.to_scalar::<f32>()? as f64;
    let mut opt = AdamW::new(
        vec![soft.clone()],
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let began = Instant::now();
    let mut batches = Batches::new(all.len(), &mut rng);
    let mut curve = Vec::with_capacity(cfg.steps);
    let mut best = (nll_before, init.detach());
    for step in 0..cfg.steps {
        let batch = batches.next(cfg.batch, &mut rng);
        let loss = nll(soft.as_tensor(), &batch)?;
        opt.backward_step(&loss)?;
        let lv = loss.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            return Err(AttackError::Invalid(format!(
                "loss became {lv} at step {step}; lower lr"
            )));
        }
        curve.push(lv);
        progress(step + 1, cfg.steps, lv);
        if (step + 1) % CHECK_EVERY == 0 || step + 1 == cfg.steps {
            let now = soft.as_tensor().detach();
            let score = nll(&now, &all)?.to_scalar::<f32>()? as f64;
            if score < best.0 {
                best = (score, now);
            }
        }
    }
    Ok(AttackFit {
        prefix: SoftPrefix {
            embeds: best.1,
            start,
        },
        curve,
        nll_before,
        nll_after: best.0,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// Mean target NLL per token under `prefix` (or none) and `defence`: how well an attack
/// elicits held-out targets.
pub fn target_nll(
    model: &LoadedModel,
    defence: &Intervention,
    prefix: Option<&SoftPrefix>,
    targets: &[Target],
    max_target_tokens: usize,
) -> Result<f64, AttackError> {
    let mut examples = Encoded::all(model, targets, max_target_tokens)?;
    let hooks = match prefix {
        Some(p) => {
            let placeholders = vec![PLACEHOLDER; p.len()];
            examples = examples
                .iter()
                .map(|e| e.with_inserted(p.start, &placeholders))
                .collect();
            p.with(&defence.hooks())
        }
        None => defence.hooks(),
    };
    Ok(mean_nll(model, &hooks, &examples)?.to_scalar::<f32>()? as f64)
}
