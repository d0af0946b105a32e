//! Llama-family decoder (SmolLM2, Llama 2/3-style without rope scaling): RMSNorm, RoPE in
//! the Hugging Face "rotate half" layout, grouped-query attention, SwiGLU MLP, tied or
//! untied unembedding. Weights use Hugging Face checkpoint names; GGUF files are renamed
//! and their q/k rows un-permuted into this layout by `gguf.rs`.

use std::ops::Range;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::attention;
use super::hooks::{ActivationCache, HookPoint, Hooks};
use super::ops::{self, Rope, Weight};
use super::residual;
use super::token_scores::{self, TokenScore};
use super::{Arch, ForwardOutput, KvCache, LogitsAt, ModelError, ModelInfo, Transformer};

/// `config.json` as Hugging Face writes it for `LlamaForCausalLM`.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfigFile {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    2048
}

/// Resolved configuration: defaults filled once.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub d_model: usize,
    pub d_mlp: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub vocab_size: usize,
    pub tie_embeddings: bool,
    pub max_positions: usize,
}

impl LlamaConfigFile {
    pub fn into_config(self, path: &Path) -> Result<LlamaConfig, ModelError> {
        if let Some(s) = &self.rope_scaling {
            if !s.is_null() {
                return Err(ModelError::config(
                    path,
                    "rope_scaling",
                    format!("rope scaling {s} is not supported yet"),
                ));
            }
        }
        if self.attention_bias || self.mlp_bias {
            return Err(ModelError::config(
                path,
                "attention_bias",
                "biased Llama projections are not supported",
            ));
        }
        let n_kv_heads = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if n_kv_heads == 0 || self.num_attention_heads % n_kv_heads != 0 {
            return Err(ModelError::config(
                path,
                "num_key_value_heads",
                format!(
                    "{n_kv_heads} does not divide num_attention_heads {}",
                    self.num_attention_heads
                ),
            ));
        }
        let d_head = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads);
        Ok(LlamaConfig {
            d_model: self.hidden_size,
            d_mlp: self.intermediate_size,
            n_layers: self.num_hidden_layers,
            n_heads: self.num_attention_heads,
            n_kv_heads,
            d_head,
            rms_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            vocab_size: self.vocab_size,
            tie_embeddings: self.tie_word_embeddings,
            max_positions: self.max_position_embeddings,
        })
    }
}

struct Attention {
    q: Weight,
    k: Weight,
    v: Weight,
    o: Weight,
}

struct Mlp {
    gate: Weight,
    up: Weight,
    down: Weight,
}

struct Block {
    ln1: Tensor,
    attn: Attention,
    ln2: Tensor,
    mlp: Mlp,
}

impl Block {
    fn load(vb: VarBuilder, c: &LlamaConfig) -> candle_core::Result<Self> {
        let (d, dh) = (c.d_model, c.d_head);
        let a = vb.pp("self_attn");
        let m = vb.pp("mlp");
        Ok(Block {
            ln1: vb.pp("input_layernorm").get(d, "weight")?,
            attn: Attention {
                q: Weight::new(a.pp("q_proj").get((c.n_heads * dh, d), "weight")?),
                k: Weight::new(a.pp("k_proj").get((c.n_kv_heads * dh, d), "weight")?),
                v: Weight::new(a.pp("v_proj").get((c.n_kv_heads * dh, d), "weight")?),
                o: Weight::new(a.pp("o_proj").get((d, c.n_heads * dh), "weight")?),
            },
            ln2: vb.pp("post_attention_layernorm").get(d, "weight")?,
            mlp: Mlp {
                gate: Weight::new(m.pp("gate_proj").get((c.d_mlp, d), "weight")?),
                up: Weight::new(m.pp("up_proj").get((c.d_mlp, d), "weight")?),
                down: Weight::new(m.pp("down_proj").get((d, c.d_mlp), "weight")?),
            },
        })
    }
}

pub struct Llama {
    cfg: LlamaConfig,
    info: ModelInfo,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Weight,
    rope: Rope,
    device: Device,
}

impl Llama {
    /// Load from Hugging Face-named weights (`model.layers.{i}.self_attn.q_proj.weight`…).
    pub fn load(vb: VarBuilder, cfg: LlamaConfig) -> candle_core::Result<Self> {
        let device = vb.device().clone();
        let embed = vb
            .pp("model.embed_tokens")
            .get((cfg.vocab_size, cfg.d_model), "weight")?;
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::load(vb.pp(format!("model.layers.{i}")), &cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = vb.pp("model.norm").get(cfg.d_model, "weight")?;
        let lm_head = Weight::new(if cfg.tie_embeddings {
            embed.clone()
        } else {
            vb.pp("lm_head")
                .get((cfg.vocab_size, cfg.d_model), "weight")?
        });
        // RoPE tables cover the context window; cheap (max_pos × dh/2 floats).
        let rope = Rope::new(cfg.d_head, cfg.rope_theta, cfg.max_positions, &device)?;
        let info = ModelInfo {
            arch: Arch::Llama,
            n_layers: cfg.n_layers,
            d_model: cfg.d_model,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            d_head: cfg.d_head,
            d_mlp: cfg.d_mlp,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_positions,
        };
        Ok(Llama {
            cfg,
            info,
            embed,
            blocks,
            norm,
            lm_head,
            rope,
            device,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn attention(
        &self,
        layer: usize,
        x: &Tensor,
        offset: usize,
        kv: Option<&mut KvCache>,
        extent: Extent,
        hooks: &Hooks,
        cache: &mut ActivationCache,
    ) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let a = &self.blocks[layer].attn;
        let (b, t, _) = x.dims3()?;
        let q = ops::linear(x, &a.q, None)?.reshape((b, t, c.n_heads, c.d_head))?;
        let k = ops::linear(x, &a.k, None)?.reshape((b, t, c.n_kv_heads, c.d_head))?;
        let v = ops::linear(x, &a.v, None)?.reshape((b, t, c.n_kv_heads, c.d_head))?;
        let q = hooks.apply(HookPoint::AttnQ(layer), q, offset, cache)?;
        let k = hooks.apply(HookPoint::AttnK(layer), k, offset, cache)?;
        let v = hooks.apply(HookPoint::AttnV(layer), v, offset, cache)?;
        let cached_rows = kv.as_ref().and_then(|kv| kv.row_positions(t, offset));
        let rows = match extent {
            Extent::Segments(_, pos) => Some(pos),
            Extent::Batch(_) => cached_rows.as_deref(),
        };
        let rope = |x: Tensor| match rows {
            Some(pos) => self.rope.apply_rows(&x, pos),
            None => self.rope.apply(&x, offset),
        };
        let fused =
            attention::applies(&[&q, &k, &v]) && !hooks.touches(HookPoint::AttnPattern(layer));
        if let (Extent::Segments(..), false) = (extent, fused) {
            candle_core::bail!("sequences laid end to end need the fused attention");
        }
        // [b, heads, t, dh]; the fused form takes q in its own [b, t, heads, dh].
        let q = if fused {
            self.rope.apply_thd(&q, offset, rows)?
        } else {
            rope(q.transpose(1, 2)?.contiguous()?)?
        };
        let (k, v) = if fused {
            let v = match super::rotary::relayout(&v, None, true)? {
                Some(v) => v,
                None => v.transpose(1, 2)?.contiguous()?,
            };
            (self.rope.apply_heads_first(&k, offset, rows)?, v)
        } else {
            (
                rope(k.transpose(1, 2)?.contiguous()?)?,
                v.transpose(1, 2)?.contiguous()?,
            )
        };
        let (k, v) = match kv {
            Some(kv) => kv.append(layer, k, v)?,
            None => (k, v),
        };
        let scale = 1.0 / (c.d_head as f64).sqrt();
        let z = match (extent, fused) {
            // Not fused was refused above.
            (Extent::Segments(segments, _), _) => {
                attention::attend_segments(&q, &k, &v, segments, scale)? // [1, n, h, dh]
            }
            (Extent::Batch(mask), true) => attention::attend(&q, &k, &v, mask, scale)?, // [b, t, h, dh]
            (Extent::Batch(mask), false) => {
                let rep = c.n_heads / c.n_kv_heads;
                let k = ops::repeat_kv(&k, rep)?.contiguous()?;
                let v = ops::repeat_kv(&v, rep)?.contiguous()?;
                let mut scores = (q.matmul(&k.t()?)? * scale)?; // [b, h, t, t_total]
                if let Some(mask) = mask {
                    scores = scores.broadcast_add(mask)?;
                }
                let pattern = ops::softmax_last_dim(&scores)?;
                let pattern = hooks.apply(HookPoint::AttnPattern(layer), pattern, offset, cache)?;
                pattern.matmul(&v)?.transpose(1, 2)? // [b, t, h, dh]
            }
        };
        let z = hooks.apply(HookPoint::AttnZ(layer), z, offset, cache)?;
        let z = z.reshape((b, t, c.n_heads * c.d_head))?;
        ops::linear(&z, &a.o, None)
    }

    fn mlp(
        &self,
        layer: usize,
        x: &Tensor,
        offset: usize,
        hooks: &Hooks,
        cache: &mut ActivationCache,
    ) -> candle_core::Result<Tensor> {
        let m = &self.blocks[layer].mlp;
        let post = if hooks.touches(HookPoint::MlpPre(layer)) {
            let pre = ops::linear(x, &m.gate, None)?; // [b, t, m]
            let pre = hooks.apply(HookPoint::MlpPre(layer), pre, offset, cache)?;
            let up = ops::linear(x, &m.up, None)?;
            super::gated::silu_mul(&pre, &up)?
        } else {
            super::gated::silu_gated_linear(x, &m.gate, &m.up)?
        };
        let post = hooks.apply(HookPoint::MlpPost(layer), post, offset, cache)?;
        ops::linear(&post, &m.down, None)
    }

    /// Block `l` on the residual stream entering it: `hook_resid_pre` to `hook_resid_post`.
    fn block(
        &self,
        l: usize,
        resid: Tensor,
        offset: usize,
        kv: Option<&mut KvCache>,
        extent: Extent,
        hooks: &Hooks,
        cache: &mut ActivationCache,
    ) -> candle_core::Result<Tensor> {
        let blk = &self.blocks[l];
        let resid_pre = hooks.apply(HookPoint::ResidPre(l), resid, offset, cache)?;
        let h = ops::rms_norm(&resid_pre, &blk.ln1, self.cfg.rms_eps)?;
        let attn = self.attention(l, &h, offset, kv, extent, hooks, cache)?;
        let attn = hooks.apply(HookPoint::AttnOut(l), attn, offset, cache)?;
        let resid_mid = residual::add(&resid_pre, &attn)?;
        let resid_mid = hooks.apply(HookPoint::ResidMid(l), resid_mid, offset, cache)?;
        let h = ops::rms_norm(&resid_mid, &blk.ln2, self.cfg.rms_eps)?;
        let mlp = self.mlp(l, &h, offset, hooks, cache)?;
        let mlp = hooks.apply(HookPoint::MlpOut(l), mlp, offset, cache)?;
        let resid_post = residual::add(&resid_mid, &mlp)?;
        hooks.apply(HookPoint::ResidPost(l), resid_post, offset, cache)
    }

    fn forward_inner(
        &self,
        ids: &Tensor,
        mut kv: Option<&mut KvCache>,
        hooks: &Hooks,
        at: LogitsAt,
    ) -> candle_core::Result<ForwardOutput> {
        let (b, t) = ids.dims2()?;
        let offset = kv.as_ref().map(|k| k.len()).unwrap_or(0);
        let mut cache = ActivationCache::default();
        let (call, replayed) = super::prefix_memo::begin(ids, kv.as_deref(), hooks)?;
        let (first, mut resid) = match replayed {
            Some(start) => start,
            None => {
                let x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
                    b,
                    t,
                    self.cfg.d_model,
                ))?; // [b, t, d]
                (0, hooks.apply(HookPoint::Embed, x, offset, &mut cache)?)
            }
        };
        let mask = super::attention_mask(kv.as_deref(), t, offset, resid.dtype(), &self.device)?;
        for l in first..self.cfg.n_layers {
            if let Some(c) = &call {
                c.record(l, &resid);
            }
            resid = self.block(
                l,
                resid,
                offset,
                kv.as_deref_mut(),
                Extent::Batch(mask.as_ref()),
                hooks,
                &mut cache,
            )?;
        }
        super::prefix_memo::finish(call, kv);
        let logits = super::logits_at(at, &resid, self.cfg.vocab_size, |h| self.unembed_inner(h))?;
        Ok(ForwardOutput { logits, cache })
    }

    /// The stream leaving the last block `[1, rows.len(), d]` at `rows`, for
    /// [`Transformer::forward_seqs`] without padding: the sequences end to end as one
    /// row of `n` positions, where every op but RoPE and attention works position by
    /// position; those take each position's place in its sequence and attend within it
    /// ([`attention::attend_segments`]). Only where [`Llama::runs_unpadded`].
    fn segments_stream(&self, seqs: &[Vec<u32>], rows: &[u32]) -> candle_core::Result<Tensor> {
        let ids: Vec<u32> = seqs.concat();
        let n = ids.len();
        let segments: Vec<(usize, usize)> = super::seq_starts(seqs)
            .into_iter()
            .zip(seqs.iter().map(Vec::len))
            .collect();
        let positions: Vec<u32> = seqs.iter().flat_map(|s| 0..s.len() as u32).collect();
        let ids = Tensor::new(ids.as_slice(), &self.device)?;
        let d = self.cfg.d_model;
        let mut resid = self.embed.index_select(&ids, 0)?.reshape((1, n, d))?;
        let (hooks, mut cache) = (Hooks::default(), ActivationCache::default());
        let extent = Extent::Segments(&segments, &positions);
        for l in 0..self.cfg.n_layers {
            resid = self.block(l, resid, 0, None, extent, &hooks, &mut cache)?;
        }
        let index = Tensor::new(rows, &self.device)?;
        resid.reshape((n, d))?.index_select(&index, 0)?.unsqueeze(0)
    }

    /// Whether [`Transformer::forward_seqs`] runs `seqs` unpadded: no hooks (their
    /// positions would mean something else there) and no prefix memo (it records padded
    /// batches), the fused attention, and every sequence within the window.
    fn runs_unpadded(&self, seqs: &[Vec<u32>], hooks: &Hooks) -> bool {
        let fits = |s: &Vec<u32>| !s.is_empty() && s.len() <= self.info.max_positions;
        hooks.is_empty()
            && hooks.memo().is_none()
            && attention::applies(&[&self.embed])
            && seqs.iter().all(fits)
    }

    fn unembed_inner(&self, resid: &Tensor) -> candle_core::Result<Tensor> {
        let h = ops::rms_norm(resid, &self.norm, self.cfg.rms_eps)?;
        ops::linear(&h, &self.lm_head, None)
    }
}

/// The positions each query sees in a call.
#[derive(Clone, Copy)]
enum Extent<'a> {
    /// Rows of a batch under an additive mask (`None`: nothing masked).
    Batch(Option<&'a Tensor>),
    /// Sequences laid end to end in one row: each one's (start, length), and each
    /// position's place in its sequence.
    Segments(&'a [(usize, usize)], &'a [u32]),
}

impl Transformer for Llama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn forward_at(
        &self,
        ids: &Tensor,
        kv: Option<&mut KvCache>,
        hooks: &Hooks,
        at: LogitsAt,
    ) -> Result<ForwardOutput, ModelError> {
        super::check_call(&self.info, ids, kv.as_deref(), hooks)?;
        let out = self.forward_inner(ids, kv, hooks, at)?;
        super::check_finite(&out.logits)?;
        Ok(out)
    }

    fn forward_blocks(
        &self,
        resid: &Tensor,
        layers: Range<usize>,
        hooks: &Hooks,
    ) -> Result<(Tensor, ActivationCache), ModelError> {
        let mask = super::attention_mask(None, resid.dim(1)?, 0, resid.dtype(), &self.device)?;
        super::run_blocks(&self.info, resid, layers, hooks, |l, x, cache| {
            self.block(l, x, 0, None, Extent::Batch(mask.as_ref()), hooks, cache)
        })
    }

    fn unembed(&self, resid: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.unembed_inner(resid)?)
    }

    fn forward_seqs(
        &self,
        seqs: &[Vec<u32>],
        pad: u32,
        hooks: &Hooks,
        rows: &[u32],
    ) -> Result<Tensor, ModelError> {
        super::check_seq_rows(seqs.iter().map(Vec::len).sum(), rows)?;
        if !self.runs_unpadded(seqs, hooks) {
            return super::forward_seqs_padded(self, seqs, pad, hooks, rows);
        }
        let logits = self.unembed_inner(&self.segments_stream(seqs, rows)?)?;
        super::check_finite(&logits)?;
        Ok(logits.squeeze(0)?)
    }

    fn score_seqs(
        &self,
        seqs: &[Vec<u32>],
        pad: u32,
        hooks: &Hooks,
        rows: &[u32],
        targets: &[u32],
    ) -> Result<Vec<TokenScore>, ModelError> {
        super::check_seq_rows(seqs.iter().map(Vec::len).sum(), rows)?;
        if !self.runs_unpadded(seqs, hooks) {
            let logits = super::forward_seqs_padded(self, seqs, pad, hooks, rows)?;
            return token_scores::from_logits(&logits, targets);
        }
        let stream = self.segments_stream(seqs, rows)?;
        let h = ops::rms_norm(&stream, &self.norm, self.cfg.rms_eps)?;
        if let Some(scores) = token_scores::through_unembedding(&h, &self.lm_head, targets)? {
            return Ok(scores);
        }
        // The kernel does not run here, or a logit is not finite: the formed logits'
        // check names it.
        let logits = ops::linear(&h, &self.lm_head, None)?;
        super::check_finite(&logits)?;
        token_scores::from_logits(&logits.squeeze(0)?, targets)
    }

    fn token_embeddings(&self) -> &Tensor {
        &self.embed
    }
}
