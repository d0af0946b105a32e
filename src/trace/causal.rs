//! Causal tracing as in ROME (Meng et al. 2022, §2.1): run the prompt clean, run it with
//! Gaussian noise on the subject tokens' input embeddings, then restore clean activations
//! at one site at a time in the corrupted run. A site's *indirect effect* is how much of
//! the target's probability its clean state brings back:
//! `effect = p(target | corrupted, site restored) − p(target | corrupted)`.
//!
//! Following ROME's code (`trace_with_patch`): the noise is σ = 3× the standard deviation
//! of the token embeddings (here over the whole vocabulary matrix), drawn once per noise
//! sample and shared by every restoration (so sites are compared on the same
//! corruptions), and probabilities are averaged over the samples before subtracting.
//! Residual sites are block outputs (`hook_resid_post`); MLP and attention sites restore
//! `hook_mlp_out` / `hook_attn_out` over a window of layers centred on the given one
//! (`max(0, l − w/2) .. min(L, l + w − w/2)`), as in ROME's Figure 1b–c.
//!
//! Many restorations run in one batch: each batch row is one noise sample under one
//! restoration, and a per-row mask decides where the clean value replaces the corrupted.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, IndexOp, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::model::hooks::{Edit, EditCtx};
use crate::model::{HookPoint, Hooks, LoadedModel, ModelError, Writer};
use crate::score::loglik::{encode_pair, LoglikRequest};

/// Which component's clean output is restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceKind {
    /// The residual stream after a block (one layer).
    Resid,
    /// MLP outputs over a window of layers.
    Mlp,
    /// Attention outputs over a window of layers.
    Attn,
}

impl FromStr for TraceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "resid" => Ok(TraceKind::Resid),
            "mlp" => Ok(TraceKind::Mlp),
            "attn" => Ok(TraceKind::Attn),
            o => Err(format!("unknown trace kind '{o}' (resid, mlp, attn)")),
        }
    }
}

impl fmt::Display for TraceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceKind::Resid => "resid",
            TraceKind::Mlp => "mlp",
            TraceKind::Attn => "attn",
        })
    }
}

impl TraceKind {
    fn point(self, layer: usize) -> HookPoint {
        match self {
            TraceKind::Resid => HookPoint::ResidPost(layer),
            TraceKind::Mlp => HookPoint::MlpOut(layer),
            TraceKind::Attn => HookPoint::AttnOut(layer),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    pub kind: TraceKind,
    /// Noise samples (ROME: 10).
    pub samples: usize,
    /// Noise σ as a multiple of the token embeddings' standard deviation (ROME: 3).
    pub noise: f64,
    /// Layers restored together for MLP and attention sites (ROME: 10).
    pub window: usize,
    pub seed: u64,
    /// Corrupted rows per forward pass (memory vs speed).
    pub batch_rows: usize,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            kind: TraceKind::Resid,
            samples: 10,
            noise: 3.0,
            window: 10,
            seed: 0,
            batch_rows: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("subject '{subject}' does not occur in the prompt '{prompt}'")]
    SubjectNotFound { subject: String, prompt: String },
    #[error("{0}")]
    Invalid(String),
}

impl From<candle_core::Error> for TraceError {
    fn from(e: candle_core::Error) -> Self {
        TraceError::Model(e.into())
    }
}

/// What a trace measures, at the clean prompt and under each restoration.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// ROME's measure: the probability of the first token of this continuation, or of
    /// the clean run's most likely next token.
    NextToken(Option<String>),
    /// The probability of the whole continuation (exp of its summed log-probability).
    Continuation(String),
    /// `log p(more) − log p(less)` for two continuations of the prompt: a stereotyping
    /// and an anti-stereotyping ending, a toxic and a non-toxic one.
    Contrast { more: String, less: String },
}

/// A traced prompt, ready to restore sites in: its tokens, the clean activations, the
/// noise, and the target.
pub struct Tracer<'m> {
    model: &'m LoadedModel,
    /// The prompt's token ids (the positions a sweep restores).
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub subject_positions: Vec<usize>,
    /// The next token measured (`NextToken` targets only).
    pub target_id: Option<u32>,
    /// The target, described.
    pub target: String,
    pub target_kind: &'static str,
    /// The measure on the clean and on the corrupted prompt (a probability, or for a
    /// contrast a log-likelihood gap).
    pub p_clean: f64,
    pub p_corrupt: f64,
    cfg: TraceConfig,
    /// Sequences run per noise sample: the prompt (next token), prompt + continuation,
    /// or prompt + each of the two continuations; right-padded to one length.
    seqs: Vec<Vec<u32>>,
    padded: Tensor,
    /// `[samples, t, d]` noise, zero outside the subject.
    noise: Tensor,
    /// Clean activations `[seqs, t, d]` of the sweep's hook points.
    clean_cache: crate::model::ActivationCache,
    /// The corrupted run's `hook_resid_pre` per layer, rows (sample, sequence): a
    /// restoration whose first site is at layer `l` starts there, since nothing before
    /// it differs from the corrupted run. A sweep's restorations then cost half the
    /// blocks on average.
    corrupt_pre: Vec<Tensor>,
}

/// One restoration: clean values at these (hook point, position) cells, all at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Site {
    pub cells: BTreeSet<(HookPoint, usize)>,
}

impl Site {
    /// Every position of `positions` at every point of `points`.
    pub fn grid(points: &[HookPoint], positions: impl IntoIterator<Item = usize> + Clone) -> Site {
        Site {
            cells: points
                .iter()
                .flat_map(|p| positions.clone().into_iter().map(move |q| (*p, q)))
                .collect(),
        }
    }

    /// The union of several sites (a circuit).
    pub fn union<'a>(sites: impl IntoIterator<Item = &'a Site>) -> Site {
        Site {
            cells: sites
                .into_iter()
                .flat_map(|s| s.cells.iter().copied())
                .collect(),
        }
    }

    /// The hook points it restores, in order.
    pub fn points(&self) -> Vec<HookPoint> {
        let v: BTreeSet<HookPoint> = self.cells.iter().map(|c| c.0).collect();
        v.into_iter().collect()
    }
}

/// ROME's JSON: `effect[layer][position] = p(restored) − p_corrupt`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceResult {
    pub kind: TraceKind,
    pub tokens: Vec<String>,
    pub subject_positions: Vec<usize>,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_id: Option<u32>,
    /// `next_token`, `continuation` (p_* are probabilities) or `contrast` (p_* are
    /// log-likelihood gaps).
    pub target_kind: &'static str,
    pub layers: Vec<usize>,
    pub p_clean: f64,
    pub p_corrupt: f64,
    pub effect: Vec<Vec<f64>>,
    pub samples: usize,
    pub noise: f64,
    /// The window of layers restored together (1 for the residual stream).
    pub window: usize,
}

impl<'m> Tracer<'m> {
    /// Prepare `prompt` with `subject` corrupted, measuring ROME's next-token target:
    /// the first token of `target` as a continuation (tokenised as lm-evaluation-harness
    /// does), or the clean run's most likely next token.
    pub fn new(
        model: &'m LoadedModel,
        prompt: &str,
        subject: &str,
        target: Option<&str>,
        cfg: TraceConfig,
    ) -> Result<Self, TraceError> {
        Self::with_target(
            model,
            prompt,
            subject,
            Target::NextToken(target.map(str::to_string)),
            cfg,
        )
    }

    /// Prepare `prompt` with `subject` corrupted, measuring `target`.
    pub fn with_target(
        model: &'m LoadedModel,
        prompt: &str,
        subject: &str,
        target: Target,
        cfg: TraceConfig,
    ) -> Result<Self, TraceError> {
        if cfg.samples == 0 || cfg.batch_rows == 0 {
            return Err(TraceError::Invalid(
                "samples and batch_rows must be positive".into(),
            ));
        }
        if cfg.kind != TraceKind::Resid && cfg.window == 0 {
            return Err(TraceError::Invalid("window must be positive".into()));
        }
        if !(cfg.noise.is_finite() && cfg.noise >= 0.0) {
            return Err(TraceError::Invalid(format!(
                "noise {} must be a non-negative number",
                cfg.noise
            )));
        }
        let ids = model.encode(prompt)?;
        let tokens = ids
            .iter()
            .map(|&i| model.tokenizer.decode(&[i]))
            .collect::<Result<Vec<_>, _>>()?;
        let subject_positions = subject_positions(model, &ids, prompt, subject)?;
        let continuation = |t: &str| -> Result<Vec<u32>, TraceError> {
            let pair = encode_pair(model, &LoglikRequest::new(prompt, t))?;
            if pair.context != ids || pair.continuation.is_empty() {
                return Err(TraceError::Invalid(format!(
                    "the target '{t}' merges with the end of the prompt when tokenised (or is \
                     empty); end the prompt at a word boundary"
                )));
            }
            Ok(ids.iter().chain(&pair.continuation).copied().collect())
        };
        let (seqs, target_kind, described) = match &target {
            Target::NextToken(_) => (vec![ids.clone()], "next_token", String::new()),
            Target::Continuation(t) => (vec![continuation(t)?], "continuation", t.clone()),
            Target::Contrast { more, less } => (
                vec![continuation(more)?, continuation(less)?],
                "contrast",
                format!("{more:?} vs {less:?}"),
            ),
        };
        let pad = model.tokenizer.eos_id.unwrap_or(0);
        let padded = crate::model::generate::pad_right(&seqs, pad, model.device())?;
        let n_layers = model.model.info().n_layers;
        let points: Vec<HookPoint> = (0..n_layers).map(|l| cfg.kind.point(l)).collect();
        let out = model.model.forward(
            &padded,
            None,
            &Hooks::new().read_all(points.iter().copied()),
        )?;
        let (target_id, target) = match &target {
            Target::NextToken(Some(t)) => {
                let first = continuation(t)?[ids.len()];
                (Some(first), model.tokenizer.decode(&[first])?)
            }
            Target::NextToken(None) => {
                let v = last_probs(&out.logits.narrow(1, 0, ids.len())?)?
                    .i(0)?
                    .to_vec1::<f32>()?;
                let best = crate::model::generate::argmax(&v);
                (Some(best), model.tokenizer.decode(&[best])?)
            }
            _ => (None, described),
        };
        let t_max = padded.dim(1)?;
        let noise = noise(model, t_max, &subject_positions, &cfg)?;
        let mut tracer = Tracer {
            model,
            ids,
            tokens,
            subject_positions,
            target_id,
            target,
            target_kind,
            p_clean: 0.0,
            p_corrupt: 0.0,
            cfg,
            seqs,
            padded,
            noise,
            clean_cache: out.cache,
            corrupt_pre: vec![],
        };
        tracer.p_clean = tracer.measure(&out.logits, 1)?[0];
        tracer.p_corrupt = tracer.corrupted_run()?;
        Ok(tracer)
    }

    /// Which positions need logits for the target.
    fn logits_at(&self) -> crate::model::LogitsAt {
        if self.target_id.is_some()
            && self.seqs.len() == 1
            && self.padded.dim(1).ok() == Some(self.ids.len())
        {
            crate::model::LogitsAt::Last
        } else {
            crate::model::LogitsAt::All
        }
    }

    /// Rows (sample, sequence) repeated for `sites` sites: the sequence and the noise
    /// sample of each row.
    fn row_layout(&self, sites: usize) -> (Vec<u32>, Vec<u32>) {
        let (k, j) = (self.cfg.samples, self.seqs.len());
        let rows = sites * k * j;
        let seq_of = (0..rows).map(|r| (r % j) as u32).collect();
        let sample_of = (0..rows).map(|r| ((r / j) % k) as u32).collect();
        (seq_of, sample_of)
    }

    /// The whole-model input of rows laid out as [`Tracer::row_layout`] gives: each
    /// row's sequence, and hooks adding each row's noise to the embeddings.
    fn corrupted_input(
        &self,
        seq_of: &[u32],
        sample_of: &[u32],
    ) -> Result<(Tensor, Hooks), TraceError> {
        let dev = self.model.device();
        let ids = self.padded.index_select(&Tensor::new(seq_of, dev)?, 0)?;
        let noise = self.noise.index_select(&Tensor::new(sample_of, dev)?, 0)?;
        let hooks = Hooks::new().write(Writer::new(
            HookPoint::Embed,
            crate::model::hooks::AddTensor(noise),
        ));
        Ok((ids, hooks))
    }

    /// The corrupted run with nothing restored: its measure, and its residual stream
    /// entering every block kept for [`Tracer::restore_many`].
    fn corrupted_run(&mut self) -> Result<f64, TraceError> {
        let (seq_of, sample_of) = self.row_layout(1);
        let (ids, hooks) = self.corrupted_input(&seq_of, &sample_of)?;
        let n = self.model.model.info().n_layers;
        let hooks = hooks.read_all((0..n).map(HookPoint::ResidPre));
        let out = self
            .model
            .model
            .forward_at(&ids, None, &hooks, self.logits_at())?;
        self.corrupt_pre = (0..n)
            .map(|l| {
                out.cache
                    .get(HookPoint::ResidPre(l))
                    .cloned()
                    .ok_or_else(|| {
                        TraceError::Invalid(format!("hook {} did not fire", HookPoint::ResidPre(l)))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(self.measure(&out.logits, self.cfg.samples)?[0])
    }

    /// The target's measure for each group of `seqs.len()` rows of `logits`, averaged
    /// over `per` consecutive groups (the noise samples of one site).
    fn measure(&self, logits: &Tensor, per: usize) -> Result<Vec<f64>, TraceError> {
        let j = self.seqs.len();
        let prompt_len = self.ids.len();
        let logits = logits.to_dtype(DType::F32)?;
        let rows = logits.dim(0)?;
        let mut values = Vec::with_capacity(rows / j);
        for g in 0..rows / j {
            let v = match self.target_id {
                Some(tok) => {
                    // Last-position logits only, or every position of the prompt.
                    let at = if logits.dim(1)? == 1 {
                        0
                    } else {
                        prompt_len - 1
                    };
                    let last = logits.i((g * j, at))?;
                    candle_nn::ops::softmax_last_dim(&last.unsqueeze(0)?)?
                        .i((0, tok as usize))?
                        .to_scalar::<f32>()? as f64
                }
                None => {
                    let mut lps = Vec::with_capacity(j);
                    for (k, seq) in self.seqs.iter().enumerate() {
                        let n = seq.len() - prompt_len;
                        let rows = logits.i(g * j + k)?.narrow(0, prompt_len - 1, n)?;
                        let lp = candle_nn::ops::log_softmax(&rows, D::Minus1)?;
                        let next = Tensor::new(&seq[prompt_len..], lp.device())?.unsqueeze(1)?;
                        lps.push(lp.gather(&next, 1)?.sum_all()?.to_scalar::<f32>()? as f64);
                    }
                    match lps.as_slice() {
                        [one] => one.exp(),
                        [more, less] => more - less,
                        _ => return Err(TraceError::Invalid("bad target sequences".into())),
                    }
                }
            };
            values.push(v);
        }
        Ok(values
            .chunks(per)
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect())
    }

    /// The sites of the sweep at `layer`, `position`: one block output, or a window of
    /// MLP / attention outputs.
    pub fn site(&self, layer: usize, position: usize) -> Site {
        let n = self.model.model.info().n_layers;
        let layers = match self.cfg.kind {
            TraceKind::Resid => layer..layer + 1,
            _ => {
                let w = self.cfg.window;
                layer.saturating_sub(w / 2)..(layer + w - w / 2).min(n)
            }
        };
        let points: Vec<HookPoint> = layers.map(|l| self.cfg.kind.point(l)).collect();
        Site::grid(&points, [position])
    }

    /// Every (layer, position) of the sweep, restored one at a time.
    pub fn sweep(&self, mut progress: impl FnMut(usize, usize)) -> Result<TraceResult, TraceError> {
        let n_layers = self.model.model.info().n_layers;
        let t = self.ids.len();
        let sites: Vec<Site> = (0..n_layers)
            .flat_map(|l| (0..t).map(move |p| (l, p)))
            .map(|(l, p)| self.site(l, p))
            .collect();
        let per_pass = (self.cfg.batch_rows / self.cfg.samples).max(1);
        let mut probs = Vec::with_capacity(sites.len());
        for chunk in sites.chunks(per_pass) {
            probs.extend(self.restore_many(chunk)?);
            progress(probs.len(), sites.len());
        }
        let effect = probs
            .chunks(t)
            .map(|row| row.iter().map(|p| p - self.p_corrupt).collect())
            .collect();
        Ok(TraceResult {
            kind: self.cfg.kind,
            tokens: self.tokens.clone(),
            subject_positions: self.subject_positions.clone(),
            target: self.target.clone(),
            target_id: self.target_id,
            target_kind: self.target_kind,
            layers: (0..n_layers).collect(),
            p_clean: self.p_clean,
            p_corrupt: self.p_corrupt,
            effect,
            samples: self.cfg.samples,
            noise: self.cfg.noise,
            window: match self.cfg.kind {
                TraceKind::Resid => 1,
                _ => self.cfg.window,
            },
        })
    }

    /// The target's measure, averaged over the noise samples, with each site's clean
    /// values restored (one site per result).
    pub fn restore_many(&self, sites: &[Site]) -> Result<Vec<f64>, TraceError> {
        let k = self.cfg.samples;
        let j = self.seqs.len();
        let t = self.padded.dim(1)?;
        let rows = sites.len() * k * j;
        let dev = self.model.device();
        // Row (site, sample, sequence): each sequence of a sample shares its noise.
        let (seq_of, sample_of) = self.row_layout(sites.len());
        let seq_idx = Tensor::new(seq_of.as_slice(), dev)?;
        let points: BTreeSet<HookPoint> = sites.iter().flat_map(|s| s.points()).collect();
        // Start at the first block a site touches, from the corrupted run's stream there
        // (the embedding and anything without a layer need the whole model).
        let first_layer = points
            .iter()
            .map(|p| p.layer())
            .collect::<Option<Vec<usize>>>()
            .and_then(|ls| ls.into_iter().min());
        let mut restores = Vec::with_capacity(points.len());
        for p in points {
            let clean = match self.clean_cache.get(p) {
                Some(c) => c.clone(),
                None => self.clean_value(p)?,
            }
            .index_select(&seq_idx, 0)?;
            let mut mask = vec![0f32; rows * t];
            for (s, site) in sites.iter().enumerate() {
                for &(_, pos) in site.cells.range((p, 0)..=(p, usize::MAX)) {
                    if pos < t {
                        for r in s * k * j..(s + 1) * k * j {
                            mask[r * t + pos] = 1.0;
                        }
                    }
                }
            }
            let mask = Tensor::from_vec(mask, (rows, t, 1), dev)?;
            restores.push(Writer::new(p, Restore { clean, mask }));
        }
        let at = self.logits_at();
        let logits = match first_layer {
            // From the start: the embedding hook adds the noise, then the restorations.
            None => {
                let (ids, mut hooks) = self.corrupted_input(&seq_of, &sample_of)?;
                restores.into_iter().for_each(|w| hooks.push_writer(w));
                self.model.model.forward_at(&ids, None, &hooks, at)?.logits
            }
            // From a block: the stored corrupted stream already carries the noise.
            Some(l0) => {
                let mut hooks = Hooks::new();
                restores.into_iter().for_each(|w| hooks.push_writer(w));
                let n = self.model.model.info().n_layers;
                let row_of: Vec<u32> = sample_of
                    .iter()
                    .zip(&seq_of)
                    .map(|(s, q)| s * j as u32 + q)
                    .collect();
                let resid =
                    self.corrupt_pre[l0].index_select(&Tensor::new(row_of.as_slice(), dev)?, 0)?;
                let (mut out, _) = self.model.model.forward_blocks(&resid, l0..n, &hooks)?;
                if at == crate::model::LogitsAt::Last {
                    out = out.narrow(1, t - 1, 1)?;
                }
                self.model.model.unembed(&out)?
            }
        };
        self.measure(&logits, k)
    }

    /// The clean activation at a hook point outside the sweep's kind (tests and circuit
    /// selection restore across kinds).
    fn clean_value(&self, p: HookPoint) -> Result<Tensor, TraceError> {
        let out = self.model.forward_ids(&self.ids, &Hooks::new().read(p))?;
        out.cache
            .get(p)
            .cloned()
            .ok_or_else(|| TraceError::Invalid(format!("hook {p} did not fire")))
    }

    /// Restoring every position of one layer's residual stream (test of the machinery:
    /// it must give back p_clean).
    pub fn all_positions(&self, p: HookPoint) -> Site {
        Site::grid(&[p], 0..self.ids.len())
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// The `[samples, t, d]` noise added to the input embeddings (zero outside the
    /// subject), so an independent implementation can trace the same corruptions.
    pub fn noise(&self) -> &Tensor {
        &self.noise
    }
}

/// Replace `x` by `clean` (`[rows or 1, t, ...]`) where `mask` (`[rows, t, units or 1
/// (, 1)]`) is 1: restoration here, activation patching in `patching.rs`.
pub(crate) struct Restore {
    pub(crate) clean: Tensor,
    pub(crate) mask: Tensor,
}

impl Edit for Restore {
    fn apply(&self, x: &Tensor, ctx: &EditCtx) -> candle_core::Result<Tensor> {
        let t = x.dim(1)?;
        let clean = self.clean.narrow(1, ctx.offset, t)?.to_dtype(x.dtype())?;
        let m = self.mask.narrow(1, ctx.offset, t)?.to_dtype(x.dtype())?;
        let keep = m.affine(-1.0, 1.0)?;
        x.broadcast_mul(&keep)? + m.broadcast_mul(&clean.broadcast_as(x.shape())?)?
    }
}

/// Softmax of the last position's logits, `[b, vocab]`, in f32.
fn last_probs(logits: &Tensor) -> Result<Tensor, TraceError> {
    let t = logits.dim(1)?;
    let last = logits.i((.., t - 1))?.to_dtype(DType::F32)?;
    Ok(candle_nn::ops::softmax_last_dim(&last)?)
}

/// σ = `cfg.noise` × std of the token embedding matrix; `[samples, t, d]`, zero outside
/// the subject. Drawn with a seeded ChaCha stream (Box–Muller), so a trace is
/// reproducible.
fn noise(
    model: &LoadedModel,
    t: usize,
    subject: &[usize],
    cfg: &TraceConfig,
) -> Result<Tensor, TraceError> {
    let emb = model.model.token_embeddings().to_dtype(DType::F64)?;
    let mean = emb.mean_all()?.to_scalar::<f64>()?;
    let var = emb
        .affine(1.0, -mean)?
        .sqr()?
        .mean_all()?
        .to_scalar::<f64>()?;
    // The noise is added to the stream's embeddings, which some models scale.
    let sigma = cfg.noise * var.sqrt() * model.model.embed_scale();
    let d = model.model.info().d_model;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut v = vec![0f32; cfg.samples * t * d];
    for s in 0..cfg.samples {
        for &p in subject {
            for j in 0..d {
                v[(s * t + p) * d + j] = (sigma * std_normal(&mut rng)) as f32;
            }
        }
    }
    Ok(Tensor::from_vec(v, (cfg.samples, t, d), model.device())?)
}

fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller; 1 − u keeps the logarithm finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Token positions covering `subject`'s last occurrence in `prompt`: every token whose
/// decoded text overlaps the subject's characters (ROME's `find_token_range` idea).
pub fn subject_positions(
    model: &LoadedModel,
    ids: &[u32],
    prompt: &str,
    subject: &str,
) -> Result<Vec<usize>, TraceError> {
    let not_found = || TraceError::SubjectNotFound {
        subject: subject.to_string(),
        prompt: prompt.to_string(),
    };
    if subject.trim().is_empty() {
        return Err(not_found());
    }
    // Offsets in the decoded text, which for a byte-level BPE equals the prompt.
    let mut ends = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        ends.push(model.tokenizer.decode(&ids[..=i])?.len());
    }
    let decoded = model.tokenizer.decode(ids)?;
    let start = decoded.rfind(subject).ok_or_else(not_found)?;
    let end = start + subject.len();
    let positions: Vec<usize> = (0..ids.len())
        .filter(|&i| {
            let s = if i == 0 { 0 } else { ends[i - 1] };
            s < end && ends[i] > start
        })
        .collect();
    if positions.is_empty() {
        return Err(not_found());
    }
    Ok(positions)
}

/// Mean over the sweep's positions of a token set: helps summarise a trace.
pub fn mean_effect(r: &TraceResult, layers: std::ops::Range<usize>, position: usize) -> f64 {
    let xs: Vec<f64> = layers.map(|l| r.effect[l][position]).collect();
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}
