//! Gemma 3 decoder (text): embeddings scaled by √d, RMSNorm around both attention and
//! MLP (pre- and post-norms), q/k RMSNorm per head, RoPE in the rotate-half layout with
//! one base for global layers and another for local ones, local layers attending to a
//! sliding window, GeGLU MLP with tanh GELU, tied unembedding, optional softcapping.
//!
//! Hook points keep the additive reading of the residual stream that tracing relies on:
//! `attn.hook_out` and `mlp.hook_out` sit after the post-norms, so
//! `resid_mid = resid_pre + attn_out` and `resid_post = resid_mid + mlp_out` hold as in
//! Llama. `hook_q`/`hook_k`/`hook_v` are the projections' outputs (before the q/k norms
//! and RoPE); `hook_embed` is the scaled embedding, the stream entering block 0.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use super::attention;
use super::hooks::{ActivationCache, HookPoint, Hooks};
use super::ops::{self, Rope, Weight};
use super::{Arch, ForwardOutput, KvCache, LogitsAt, ModelError, ModelInfo, Transformer};

/// Resolved Gemma 3 configuration (read from GGUF metadata by `gguf.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Config {
    pub d_model: usize,
    pub d_mlp: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub rms_eps: f64,
    /// RoPE base of global layers.
    pub rope_global: f64,
    /// RoPE base of local (sliding-window) layers.
    pub rope_local: f64,
    /// Linear RoPE scaling of global layers (positions divided by it); 1 for none.
    pub rope_global_scale: f64,
    /// Positions a local layer's query sees, itself included.
    pub sliding_window: usize,
    /// Every `global_every`-th layer (1-based) attends globally.
    pub global_every: usize,
    /// Scores are multiplied by `query_pre_attn_scalar^-0.5`.
    pub query_pre_attn_scalar: f64,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    pub vocab_size: usize,
    pub max_positions: usize,
}

impl Gemma3Config {
    pub fn is_global(&self, layer: usize) -> bool {
        (layer + 1) % self.global_every == 0
    }
}

/// One block's weights under Gemma's names. Norm weights hold the multiplier (1 + w).
pub struct Gemma3Block {
    pub attn_norm: Tensor,
    pub q: Weight,
    pub k: Weight,
    pub v: Weight,
    pub q_norm: Tensor,
    pub k_norm: Tensor,
    pub o: Weight,
    pub post_attn_norm: Tensor,
    pub mlp_norm: Tensor,
    pub gate: Weight,
    pub up: Weight,
    pub down: Weight,
    pub post_mlp_norm: Tensor,
}

pub struct Gemma3 {
    cfg: Gemma3Config,
    info: ModelInfo,
    embed: Tensor,
    /// The embeddings again as the (tied) unembedding's weight.
    unembed: Weight,
    blocks: Vec<Gemma3Block>,
    norm: Tensor,
    rope_global: Rope,
    rope_local: Rope,
    device: Device,
}

/// Both layer kinds' masks of one call, built once for all layers.
struct Masks {
    global: Option<Tensor>,
    local: Option<Tensor>,
}

impl Gemma3 {
    pub fn new(
        cfg: Gemma3Config,
        embed: Tensor,
        blocks: Vec<Gemma3Block>,
        norm: Tensor,
    ) -> Result<Self, ModelError> {
        let device = embed.device().clone();
        let (v, d) = embed.dims2()?;
        if (v, d) != (cfg.vocab_size, cfg.d_model) || blocks.len() != cfg.n_layers {
            return Err(ModelError::Call(format!(
                "Gemma 3 weights do not match the config: embeddings {v}×{d}, {} blocks; config {}×{}, {} layers",
                blocks.len(),
                cfg.vocab_size,
                cfg.d_model,
                cfg.n_layers
            )));
        }
        // Linear scaling divides positions, i.e. the base frequencies, by the factor;
        // expressed as a larger base it would not be exact, so it is applied to angles.
        let rope_global = Rope::scaled(
            cfg.d_head,
            cfg.rope_global,
            cfg.rope_global_scale,
            cfg.max_positions,
            &device,
        )?;
        let rope_local = Rope::new(cfg.d_head, cfg.rope_local, cfg.max_positions, &device)?;
        let info = ModelInfo {
            arch: Arch::Gemma3,
            n_layers: cfg.n_layers,
            d_model: cfg.d_model,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            d_head: cfg.d_head,
            d_mlp: cfg.d_mlp,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_positions,
        };
        Ok(Gemma3 {
            cfg,
            info,
            unembed: Weight::new(embed.clone()),
            embed,
            blocks,
            norm,
            rope_global,
            rope_local,
            device,
        })
    }

    pub fn config(&self) -> &Gemma3Config {
        &self.cfg
    }

    fn masks(
        &self,
        kv: Option<&KvCache>,
        t: usize,
        offset: usize,
        dtype: DType,
    ) -> candle_core::Result<Masks> {
        Ok(Masks {
            global: super::sliding_attention_mask(kv, t, offset, None, dtype, &self.device)?,
            local: super::sliding_attention_mask(
                kv,
                t,
                offset,
                Some(self.cfg.sliding_window),
                dtype,
                &self.device,
            )?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        x: &Tensor,
        offset: usize,
        kv: Option<&mut KvCache>,
        masks: &Masks,
        hooks: &Hooks,
        cache: &mut ActivationCache,
    ) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let a = &self.blocks[layer];
        let (b, t, _) = x.dims3()?;
        let q = ops::linear(x, &a.q, None)?.reshape((b, t, c.n_heads, c.d_head))?;
        let k = ops::linear(x, &a.k, None)?.reshape((b, t, c.n_kv_heads, c.d_head))?;
        let v = ops::linear(x, &a.v, None)?.reshape((b, t, c.n_kv_heads, c.d_head))?;
        let q = hooks.apply(HookPoint::AttnQ(layer), q, offset, cache)?;
        let k = hooks.apply(HookPoint::AttnK(layer), k, offset, cache)?;
        let v = hooks.apply(HookPoint::AttnV(layer), v, offset, cache)?;
        let q = ops::rms_norm(&q, &a.q_norm, c.rms_eps)?;
        let k = ops::rms_norm(&k, &a.k_norm, c.rms_eps)?;
        let global = c.is_global(layer);
        let rope = if global {
            &self.rope_global
        } else {
            &self.rope_local
        };
        let rows = kv.as_ref().and_then(|kv| kv.row_positions(t, offset));
        let rotate = |x: Tensor| match &rows {
            Some(pos) => rope.apply_rows(&x, pos),
            None => rope.apply(&x, offset),
        };
        // The fused kernel has no soft-capping of scores (Gemma 2 has it, Gemma 3 not).
        let fused = c.attn_softcap.is_none()
            && attention::applies(&[&q, &k, &v])
            && !hooks.touches(HookPoint::AttnPattern(layer));
        // [b, heads, t, dh]; the fused form takes q in its own [b, t, heads, dh].
        let q = if fused {
            rope.apply_thd(&q, offset, rows.as_deref())?
        } else {
            rotate(q.transpose(1, 2)?.contiguous()?)?
        };
        let k = rotate(k.transpose(1, 2)?.contiguous()?)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = match kv {
            Some(kv) => kv.append(layer, k, v)?,
            None => (k, v),
        };
        let scale = c.query_pre_attn_scalar.powf(-0.5);
        let mask = if global { &masks.global } else { &masks.local };
        let z = if fused {
            attention::attend(&q, &k, &v, mask.as_ref(), scale)? // [b, t, h, dh]
        } else {
            let rep = c.n_heads / c.n_kv_heads;
            let k = ops::repeat_kv(&k, rep)?.contiguous()?;
            let v = ops::repeat_kv(&v, rep)?.contiguous()?;
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(cap) = c.attn_softcap {
                scores = ((scores / cap)?.tanh()? * cap)?;
            }
            if let Some(mask) = mask {
                scores = scores.broadcast_add(mask)?;
            }
            let pattern = ops::softmax_last_dim(&scores)?;
            let pattern = hooks.apply(HookPoint::AttnPattern(layer), pattern, offset, cache)?;
            pattern.matmul(&v)?.transpose(1, 2)? // [b, t, h, dh]
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
        let m = &self.blocks[layer];
        let pre = ops::linear(x, &m.gate, None)?;
        let pre = hooks.apply(HookPoint::MlpPre(layer), pre, offset, cache)?;
        let up = ops::linear(x, &m.up, None)?;
        // candle's `gelu` is the tanh approximation (gelu_pytorch_tanh).
        let post = (pre.gelu()? * up)?;
        let post = hooks.apply(HookPoint::MlpPost(layer), post, offset, cache)?;
        ops::linear(&post, &m.down, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        l: usize,
        resid: Tensor,
        offset: usize,
        kv: Option<&mut KvCache>,
        masks: &Masks,
        hooks: &Hooks,
        cache: &mut ActivationCache,
    ) -> candle_core::Result<Tensor> {
        let blk = &self.blocks[l];
        let eps = self.cfg.rms_eps;
        let resid_pre = hooks.apply(HookPoint::ResidPre(l), resid, offset, cache)?;
        let h = ops::rms_norm(&resid_pre, &blk.attn_norm, eps)?;
        let attn = self.attention(l, &h, offset, kv, masks, hooks, cache)?;
        let attn = ops::rms_norm(&attn, &blk.post_attn_norm, eps)?;
        let attn = hooks.apply(HookPoint::AttnOut(l), attn, offset, cache)?;
        let resid_mid = hooks.apply(HookPoint::ResidMid(l), (resid_pre + attn)?, offset, cache)?;
        let h = ops::rms_norm(&resid_mid, &blk.mlp_norm, eps)?;
        let mlp = self.mlp(l, &h, offset, hooks, cache)?;
        let mlp = ops::rms_norm(&mlp, &blk.post_mlp_norm, eps)?;
        let mlp = hooks.apply(HookPoint::MlpOut(l), mlp, offset, cache)?;
        hooks.apply(HookPoint::ResidPost(l), (resid_mid + mlp)?, offset, cache)
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
                let x = (self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
                    b,
                    t,
                    self.cfg.d_model,
                ))? * self.embed_scale())?;
                (0, hooks.apply(HookPoint::Embed, x, offset, &mut cache)?)
            }
        };
        let masks = self.masks(kv.as_deref(), t, offset, resid.dtype())?;
        for l in first..self.cfg.n_layers {
            if let Some(c) = &call {
                c.record(l, &resid);
            }
            resid = self.block(
                l,
                resid,
                offset,
                kv.as_deref_mut(),
                &masks,
                hooks,
                &mut cache,
            )?;
        }
        super::prefix_memo::finish(call, kv);
        let logits = super::logits_at(at, &resid, self.cfg.vocab_size, |h| self.unembed_inner(h))?;
        Ok(ForwardOutput { logits, cache })
    }

    fn unembed_inner(&self, resid: &Tensor) -> candle_core::Result<Tensor> {
        let h = ops::rms_norm(resid, &self.norm, self.cfg.rms_eps)?;
        let logits = ops::linear(&h, &self.unembed, None)?;
        match self.cfg.final_softcap {
            Some(cap) => (logits / cap)?.tanh()? * cap,
            None => Ok(logits),
        }
    }
}

impl Transformer for Gemma3 {
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
        let masks = self.masks(None, resid.dim(1)?, 0, resid.dtype())?;
        super::run_blocks(&self.info, resid, layers, hooks, |l, x, cache| {
            self.block(l, x, 0, None, &masks, hooks, cache)
        })
    }

    fn unembed(&self, resid: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.unembed_inner(resid)?)
    }

    fn token_embeddings(&self) -> &Tensor {
        &self.embed
    }

    fn embed_scale(&self) -> f64 {
        // transformers multiplies by √d rounded to the activations' dtype (f32 here).
        (self.cfg.d_model as f32).sqrt() as f64
    }
}
