//! The token-level attack: Greedy Coordinate Gradient (Zou et al. 2023, "Universal and
//! Transferable Adversarial Attacks on Aligned Language Models"), a search over real
//! tokens. Each step takes the gradient of the targets' loss with respect to a one-hot
//! encoding of the attack tokens, keeps each position's `top_k` most promising
//! replacements, tries `candidates` single-token swaps drawn from them, and keeps the
//! best swap (by the true loss, not the gradient's guess).
//!
//! Decisions:
//! - The tokens go where the soft prompt goes, in front of the prompt (after BOS), not
//!   after it: these prompts are continued, and a suffix would become part of the text
//!   being continued. The result is then a [`SoftPrefix`] of the tokens' own embeddings,
//!   which gives the model exactly the input the token ids would (a test checks it).
//! - Candidates are tokens that decode to printable ASCII and are not special tokens:
//!   an attack a user could paste.
//! - The loss is over a fixed set of `batch` targets (GCG's multi-prompt form), so the
//!   best tokens seen are comparable from step to step.

use std::time::Instant;

use candle_core::{DType, IndexOp, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::intervene::Intervention;
use crate::model::{HookPoint, Hooks, LoadedModel};

use super::embedding::{SoftPrefix, PLACEHOLDER};
use super::targets::{continuation_nll, mean_nll, Encoded, Target};
use super::AttackError;

#[derive(Debug, Clone, PartialEq)]
pub struct GcgConfig {
    /// Attack tokens.
    pub positions: usize,
    /// Coordinate steps (the attacker's budget).
    pub steps: usize,
    /// Replacements kept per position from the gradient.
    pub top_k: usize,
    /// Swaps evaluated per step.
    pub candidates: usize,
    /// Targets the loss is taken over.
    pub batch: usize,
    pub max_target_tokens: usize,
    pub seed: u64,
}

impl Default for GcgConfig {
    fn default() -> Self {
        GcgConfig {
            positions: 20,
            steps: 40,
            top_k: 64,
            candidates: 32,
            batch: 4,
            max_target_tokens: 16,
            seed: 0,
        }
    }
}

/// A fitted token attack.
#[derive(Debug, Clone)]
pub struct GcgFit {
    pub tokens: Vec<u32>,
    /// The attack as text (for reports; the run uses the ids).
    pub text: String,
    /// Best mean NLL per target token after each step.
    pub curve: Vec<f64>,
    /// Without the attack, and with its initial (random) tokens.
    pub nll_before: f64,
    pub nll_start: f64,
    pub seconds: f64,
}

impl GcgFit {
    /// The attack as the input embeddings its tokens have.
    pub fn prefix(&self, model: &LoadedModel) -> Result<SoftPrefix, AttackError> {
        token_prefix(model, &self.tokens)
    }
}

/// A [`SoftPrefix`] holding what `hook_embed` holds for `tokens` at the prefix's
/// positions: the same model input as inserting the tokens themselves. Read off a
/// forward pass rather than the embedding matrix, because some models (GPT-2) add their
/// position embeddings before `hook_embed`.
pub fn token_prefix(model: &LoadedModel, tokens: &[u32]) -> Result<SoftPrefix, AttackError> {
    let start = SoftPrefix::start_for(model);
    let mut ids: Vec<u32> = model.tokenizer.bos_id.into_iter().take(start).collect();
    ids.extend_from_slice(tokens);
    let out = model.forward_ids(&ids, &Hooks::new().read(HookPoint::Embed))?;
    let embeds = out
        .cache
        .get(HookPoint::Embed)
        .ok_or_else(|| AttackError::Invalid("the model did not expose hook_embed".into()))?
        .squeeze(0)?
        .narrow(0, start, tokens.len())?;
    Ok(SoftPrefix { embeds, start })
}

/// Tokens an attack may use: printable ASCII when decoded, not special.
pub fn allowed_tokens(model: &LoadedModel) -> Result<Vec<u32>, AttackError> {
    let rows = model.model.token_embeddings().dim(0)?;
    let n = rows.min(model.tokenizer.vocab_size());
    let special = model.tokenizer.special_ids();
    let mut out = Vec::new();
    for id in 0..n as u32 {
        if special.contains(&id) || id == PLACEHOLDER {
            continue;
        }
        let s = model.tokenizer.decode(&[id])?;
        if !s.trim().is_empty() && s.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            out.push(id);
        }
    }
    if out.is_empty() {
        return Err(AttackError::Invalid(
            "the vocabulary has no printable tokens to attack with".into(),
        ));
    }
    Ok(out)
}

/// Search `cfg.positions` tokens that, in front of each target's prompt, minimise its
/// continuation's NLL under `defence` (an adaptive attacker, as for the soft prompt).
pub fn fit_gcg(
    model: &LoadedModel,
    defence: &Intervention,
    targets: &[Target],
    cfg: &GcgConfig,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<GcgFit, AttackError> {
    if cfg.positions == 0
        || cfg.steps == 0
        || cfg.batch == 0
        || cfg.top_k == 0
        || cfg.candidates == 0
    {
        return Err(AttackError::Invalid(
            "positions, steps, batch, top_k and candidates must be at least 1".into(),
        ));
    }
    let began = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let allowed = allowed_tokens(model)?;
    let start = SoftPrefix::start_for(model);
    let hooks = defence.hooks();
    // GCG's fixed target set: `batch` targets drawn once.
    let all = Encoded::all(model, targets, cfg.max_target_tokens)?;
    let mut pick: Vec<usize> = (0..all.len()).collect();
    rand::seq::SliceRandom::shuffle(pick.as_mut_slice(), &mut rng);
    let examples: Vec<Encoded> = pick
        .iter()
        .take(cfg.batch)
        .map(|&i| all[i].clone())
        .collect();
    let cont_tokens: usize = examples.iter().map(Encoded::len).sum();

    let mut tokens: Vec<u32> = (0..cfg.positions)
        .map(|_| allowed[rng.random_range(0..allowed.len())])
        .collect();
    let loss_of = |tokens: &[u32]| -> Result<f64, AttackError> {
        let ex: Vec<Encoded> = examples
            .iter()
            .map(|e| e.with_inserted(start, tokens))
            .collect();
        Ok(mean_nll(model, &hooks, &ex)?.to_scalar::<f32>()? as f64)
    };
    let nll_before = mean_nll(model, &hooks, &examples)?.to_scalar::<f32>()? as f64;
    let mut current = loss_of(&tokens)?;
    let nll_start = current;
    let (mut best, mut best_loss) = (tokens.clone(), current);

    // Mask over the vocabulary rows: 0 for allowed tokens, +inf otherwise.
    let emb = model.model.token_embeddings();
    let vocab = emb.dim(0)?;
    let mut mask = vec![f32::INFINITY; vocab];
    for &a in &allowed {
        mask[a as usize] = 0.0;
    }
    let mask = Tensor::new(mask.as_slice(), model.device())?;
    let emb_f32 =
        (emb.to_dtype(DType::F32)? * model.model.embed_scale())?.to_device(model.device())?;
    // The targets with room for the attack, for the gradient pass (the same every step).
    let placeholders = vec![PLACEHOLDER; cfg.positions];
    let with_room: Vec<Encoded> = examples
        .iter()
        .map(|e| e.with_inserted(start, &placeholders))
        .collect();

    let mut curve = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        // The gradient at the current tokens' embeddings, through a soft prompt holding
        // them; times the embedding matrix it is the gradient for each one-hot token.
        let soft = Var::from_tensor(&token_prefix(model, &tokens)?.embeds.to_dtype(DType::F32)?)?;
        let prefix = SoftPrefix {
            embeds: soft.as_tensor().clone(),
            start,
        };
        let loss = mean_nll(model, &prefix.with(&hooks), &with_room)?;
        let grads = loss.backward()?;
        let g = grads
            .get(soft.as_tensor())
            .ok_or_else(|| AttackError::Invalid("no gradient reached the attack tokens".into()))?;
        // [k, vocab]: the first-order change of the loss from swapping each token in.
        let scores = g
            .matmul(&emb_f32.t()?)?
            .broadcast_add(&mask.unsqueeze(0)?)?;
        let mut top: Vec<Vec<u32>> = Vec::with_capacity(cfg.positions);
        for p in 0..cfg.positions {
            let row: Vec<f32> = scores.i(p)?.to_vec1()?;
            let mut idx: Vec<u32> = (0..row.len() as u32)
                .filter(|&i| row[i as usize].is_finite())
                .collect();
            let k = cfg.top_k.min(idx.len());
            idx.select_nth_unstable_by(k.saturating_sub(1), |a, b| {
                row[*a as usize].total_cmp(&row[*b as usize])
            });
            idx.truncate(k);
            top.push(idx);
        }
        // Candidate swaps, each one position and one of its top replacements; scored
        // exactly, all candidates of a target in one batch.
        let mut cands: Vec<Vec<u32>> = Vec::with_capacity(cfg.candidates);
        for _ in 0..cfg.candidates {
            let p = rng.random_range(0..cfg.positions);
            let mut c = tokens.clone();
            c[p] = top[p][rng.random_range(0..top[p].len())];
            if c != tokens && !cands.contains(&c) {
                cands.push(c);
            }
        }
        if !cands.is_empty() {
            let mut totals = vec![0f64; cands.len()];
            for e in &examples {
                let rows: Vec<Encoded> = cands.iter().map(|c| e.with_inserted(start, c)).collect();
                let refs: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
                let nll: Vec<f32> =
                    continuation_nll(model, &hooks, &refs, rows[0].from)?.to_vec1()?;
                for (t, v) in totals.iter_mut().zip(nll) {
                    *t += v as f64;
                }
            }
            let (i, &sum) = totals
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .ok_or_else(|| AttackError::Invalid("no candidates".into()))?;
            // GCG moves to the best candidate even when it is worse than the current
            // tokens (that is how it leaves local minima); the best seen is kept.
            tokens = cands[i].clone();
            current = sum / cont_tokens.max(1) as f64;
        }
        if !current.is_finite() {
            return Err(AttackError::Invalid(format!(
                "the loss became {current} at step {step}"
            )));
        }
        if current < best_loss {
            best_loss = current;
            best = tokens.clone();
        }
        curve.push(best_loss);
        progress(step + 1, cfg.steps, best_loss);
    }
    Ok(GcgFit {
        text: model.tokenizer.decode(&best)?,
        tokens: best,
        curve,
        nll_before,
        nll_start,
        seconds: began.elapsed().as_secs_f64(),
    })
}
