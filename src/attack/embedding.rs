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

use candle_core::{DType, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::intervene::Intervention;
use crate::model::hooks::{Edit, EditCtx};
use crate::model::{HookPoint, Hooks, LoadedModel, ModelError, Writer};

#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("embedding attack: {0}")]
    Invalid(String),
}

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
    /// Mean target negative log-likelihood per token at each step.
    pub curve: Vec<f64>,
    /// The same without the attack (the soft prompt's initial value), for reference.
    pub nll_before: f64,
    pub seconds: f64,
}

/// One example: a prompt and the harmful continuation the attacker wants.
#[derive(Debug, Clone)]
pub struct Target {
    pub prompt: String,
    pub continuation: String,
}

impl Target {
    /// A harmful text as an attack target: its first `share` of words is the prompt,
    /// the rest the continuation to elicit. `None` when it is too short to split.
    pub fn split(text: &str, share: f64) -> Option<Target> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() < 4 {
            return None;
        }
        let cut = ((words.len() as f64 * share).round() as usize).clamp(1, words.len() - 1);
        Some(Target {
            prompt: words[..cut].join(" "),
            continuation: format!(" {}", words[cut..].join(" ")),
        })
    }
}

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
    if targets.is_empty() {
        return Err(AttackError::Invalid("no targets to fit on".into()));
    }
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

    // Each example as (ids, where its continuation starts, its length).
    let mut examples = Vec::with_capacity(targets.len());
    for t in targets {
        let mut ids = model.encode(&t.prompt)?;
        let prompt_len = ids.len();
        let cont = model.encode_plain(&t.continuation)?;
        let cont: Vec<u32> = cont.into_iter().take(cfg.max_target_tokens).collect();
        ids.extend(&cont);
        let prefix = SoftPrefix {
            embeds: init.clone(),
            start,
        };
        let ids = prefix.insert_placeholders(&ids);
        let max = model.model.info().max_positions;
        if ids.len() > max {
            return Err(AttackError::Invalid(format!(
                "an example is {} tokens with the soft prompt, more than the model's {max}",
                ids.len()
            )));
        }
        examples.push((ids, prompt_len + cfg.positions, cont.len()));
    }

    // Mean NLL per target token of `batch` under the soft prompt `embeds`.
    let nll = |embeds: &Tensor, batch: &[usize]| -> Result<Tensor, AttackError> {
        let prefix = SoftPrefix {
            embeds: embeds.clone(),
            start,
        };
        let hooks = prefix.with(&defence_hooks);
        let mut total: Option<Tensor> = None;
        let mut n = 0usize;
        for &i in batch {
            let (ids, from, len) = &examples[i];
            let t = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
            let logits = model.model.forward(&t, None, &hooks)?.logits.squeeze(0)?; // [t, v]
                                                                                    // Position p predicts token p + 1.
            let pred = logits.narrow(0, from - 1, *len)?;
            let logp = candle_nn::ops::log_softmax(&pred.to_dtype(DType::F32)?, D::Minus1)?;
            let want = Tensor::new(&ids[*from..from + len], &dev)?.unsqueeze(1)?;
            let picked = logp.gather(&want, 1)?.sum_all()?;
            total = Some(match total {
                None => picked,
                Some(s) => (s + picked)?,
            });
            n += len;
        }
        let total = total.ok_or_else(|| AttackError::Invalid("empty batch".into()))?;
        Ok((total.neg()? / n.max(1) as f64)?)
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
    let mut order = all.clone();
    order.shuffle(&mut rng);
    let mut at = 0usize;
    let mut curve = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        let mut batch = Vec::with_capacity(cfg.batch);
        for _ in 0..cfg.batch.min(order.len()) {
            if at == order.len() {
                order.shuffle(&mut rng);
                at = 0;
            }
            batch.push(order[at]);
            at += 1;
        }
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
    }
    Ok(AttackFit {
        prefix: SoftPrefix {
            embeds: soft.as_tensor().detach(),
            start,
        },
        curve,
        nll_before,
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
    let hooks = match prefix {
        Some(p) => p.with(&defence.hooks()),
        None => defence.hooks(),
    };
    let (mut sum, mut n) = (0.0f64, 0usize);
    for t in targets {
        let mut ids = model.encode(&t.prompt)?;
        let mut from = ids.len();
        let cont: Vec<u32> = model
            .encode_plain(&t.continuation)?
            .into_iter()
            .take(max_target_tokens)
            .collect();
        ids.extend(&cont);
        if let Some(p) = prefix {
            ids = p.insert_placeholders(&ids);
            from += p.len();
        }
        let out = model.forward_ids(&ids, &hooks)?;
        let logits = out.logits.squeeze(0)?.narrow(0, from - 1, cont.len())?;
        let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
        let want = Tensor::new(cont.as_slice(), model.device())?.unsqueeze(1)?;
        sum -= logp.gather(&want, 1)?.sum_all()?.to_scalar::<f32>()? as f64;
        n += cont.len();
    }
    Ok(sum / n.max(1) as f64)
}

/// Bumped when fitting code changes what an attack fit produces from the same inputs.
pub const ATTACK_REVISION: u32 = 1;

/// A stable identity of an intervention's effect (its kind, strength and tensors), for
/// keying attacks fitted against it.
pub fn defence_key(iv: &Intervention) -> Result<String, AttackError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{:?}", iv.kind()).as_bytes());
    if let Intervention::Offset { alpha, .. } = iv {
        h.update(alpha.to_le_bytes());
    }
    for (name, t) in iv.tensors() {
        h.update(name.as_bytes());
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A fitted attack cached on disk: `<dir>/<key>.safetensors` (the soft prompt) and
/// `<key>.json` (where it starts, its curve), both written beside their names and
/// renamed, the JSON last and holding the tensors' sha256, so a damaged or half-written
/// pair is refitted, never used.
pub fn load_cached(dir: &std::path::Path, key: &str) -> Option<AttackFit> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{key}.json"))).ok()?).ok()?;
    let tpath = dir.join(format!("{key}.safetensors"));
    let bytes = std::fs::read(&tpath).ok()?;
    let sum = crate::assets::sha256_hex(&bytes);
    if meta["tensors_sha256"].as_str() != Some(sum.as_str()) {
        eprintln!(
            "scalpel: cached attack {}: does not match its sha256; fitting it again",
            tpath.display()
        );
        return None;
    }
    let t = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu).ok()?;
    Some(AttackFit {
        prefix: SoftPrefix {
            embeds: t.get("embeds")?.clone(),
            start: meta["start"].as_u64()? as usize,
        },
        curve: meta["curve"]
            .as_array()?
            .iter()
            .filter_map(|x| x.as_f64())
            .collect(),
        nll_before: meta["nll_before"].as_f64()?,
        seconds: meta["seconds"].as_f64()?,
    })
}

/// Cache `fit` under `key` in `dir` (see [`load_cached`]); a cache that cannot be
/// written costs a refit next time, nothing more.
pub fn save_cached(dir: &std::path::Path, key: &str, fit: &AttackFit) {
    let _ = std::fs::create_dir_all(dir);
    let tpath = dir.join(format!("{key}.safetensors"));
    let tmp = dir.join(format!(".{key}.safetensors.tmp{}", std::process::id()));
    let Ok(embeds) = fit.prefix.embeds.to_device(&candle_core::Device::Cpu) else {
        return;
    };
    let map = std::collections::HashMap::from([("embeds".to_string(), embeds)]);
    if candle_core::safetensors::save(&map, &tmp).is_err() {
        return;
    }
    let Ok(bytes) = std::fs::read(&tmp) else {
        return;
    };
    if std::fs::rename(&tmp, &tpath).is_err() {
        return;
    }
    let meta = serde_json::json!({
        "start": fit.prefix.start,
        "curve": fit.curve,
        "nll_before": fit.nll_before,
        "seconds": fit.seconds,
        "tensors_sha256": crate::assets::sha256_hex(&bytes),
    });
    let _ = crate::store::write_atomic(
        &dir.join(format!("{key}.json")),
        meta.to_string().as_bytes(),
    );
}
