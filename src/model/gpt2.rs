//! GPT-2: LayerNorm, learned positions, GELU (tanh approximation, `gelu_new`), fused
//! `c_attn`, and `Conv1D` weights stored `[in, out]` (transposed to `[out, in]` at load).

use std::ops::Range;
use std::path::Path;

use candle_core::{Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::attention;
use super::hooks::{ActivationCache, HookPoint, Hooks};
use super::ops::{self, Weight};
use super::{Arch, ForwardOutput, KvCache, LogitsAt, ModelError, ModelInfo, Transformer};

/// `config.json` as Hugging Face writes it for `GPT2LMHeadModel`.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2ConfigFile {
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    pub n_positions: usize,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub max_positions: usize,
    pub vocab_size: usize,
    pub eps: f64,
    pub d_mlp: usize,
    pub tie_embeddings: bool,
}

impl Gpt2ConfigFile {
    pub fn into_config(self, path: &Path) -> Result<Gpt2Config, ModelError> {
        // Only the tanh-approximated GELU is implemented; "gelu" proper differs by ~1e-3.
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(ModelError::config(
                path,
                "activation_function",
                format!(
                    "'{}' is not supported (supported: gelu_new)",
                    self.activation_function
                ),
            ));
        }
        if !self.scale_attn_weights {
            return Err(ModelError::config(
                path,
                "scale_attn_weights",
                "false is not supported",
            ));
        }
        if self.scale_attn_by_inverse_layer_idx {
            return Err(ModelError::config(
                path,
                "scale_attn_by_inverse_layer_idx",
                "true is not supported",
            ));
        }
        if self.n_head == 0 || self.n_embd % self.n_head != 0 {
            return Err(ModelError::config(
                path,
                "n_head",
                format!("{} does not divide n_embd {}", self.n_head, self.n_embd),
            ));
        }
        Ok(Gpt2Config {
            d_model: self.n_embd,
            n_heads: self.n_head,
            n_layers: self.n_layer,
            max_positions: self.n_positions,
            vocab_size: self.vocab_size,
            eps: self.layer_norm_epsilon,
            d_mlp: self.n_inner.unwrap_or(4 * self.n_embd),
            tie_embeddings: self.tie_word_embeddings,
        })
    }
}

struct Norm {
    w: Tensor,
    b: Tensor,
}

struct Block {
    ln1: Norm,
    c_attn_w: Weight, // [3d, d]
    c_attn_b: Tensor,
    c_proj_w: Weight, // [d, d]
    c_proj_b: Tensor,
    ln2: Norm,
    fc_w: Weight, // [m, d]
    fc_b: Tensor,
    proj_w: Weight, // [d, m]
    proj_b: Tensor,
}

fn norm(vb: VarBuilder, d: usize) -> candle_core::Result<Norm> {
    Ok(Norm {
        w: vb.get(d, "weight")?,
        b: vb.get(d, "bias")?,
    })
}

/// A `Conv1D` weight: stored `[in, out]`, returned `[out, in]` like a Linear weight.
fn conv1d(vb: &VarBuilder, inp: usize, out: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let w = vb.get((inp, out), "weight")?.t()?.contiguous()?;
    let b = vb.get(out, "bias")?;
    Ok((w, b))
}

impl Block {
    fn load(vb: VarBuilder, c: &Gpt2Config) -> candle_core::Result<Self> {
        let d = c.d_model;
        let (c_attn_w, c_attn_b) = conv1d(&vb.pp("attn.c_attn"), d, 3 * d)?;
        let (c_proj_w, c_proj_b) = conv1d(&vb.pp("attn.c_proj"), d, d)?;
        let (fc_w, fc_b) = conv1d(&vb.pp("mlp.c_fc"), d, c.d_mlp)?;
        let (proj_w, proj_b) = conv1d(&vb.pp("mlp.c_proj"), c.d_mlp, d)?;
        Ok(Block {
            ln1: norm(vb.pp("ln_1"), d)?,
            c_attn_w: Weight::new(c_attn_w),
            c_attn_b,
            c_proj_w: Weight::new(c_proj_w),
            c_proj_b,
            ln2: norm(vb.pp("ln_2"), d)?,
            fc_w: Weight::new(fc_w),
            fc_b,
            proj_w: Weight::new(proj_w),
            proj_b,
        })
    }
}

pub struct Gpt2 {
    cfg: Gpt2Config,
    info: ModelInfo,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    lm_head: Weight,
    device: Device,
}

impl Gpt2 {
    /// Load from Hugging Face names, with or without the `transformer.` prefix (the
    /// original `gpt2` checkpoint has none; `GPT2LMHeadModel.save_pretrained` adds it).
    pub fn load(vb: VarBuilder, cfg: Gpt2Config) -> candle_core::Result<Self> {
        let device = vb.device().clone();
        let root = if vb.contains_tensor("transformer.wte.weight") {
            vb.pp("transformer")
        } else {
            vb.clone()
        };
        let wte = root
            .pp("wte")
            .get((cfg.vocab_size, cfg.d_model), "weight")?;
        let wpe = root
            .pp("wpe")
            .get((cfg.max_positions, cfg.d_model), "weight")?;
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::load(root.pp(format!("h.{i}")), &cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ln_f = norm(root.pp("ln_f"), cfg.d_model)?;
        let lm_head = Weight::new(if cfg.tie_embeddings {
            wte.clone()
        } else {
            vb.pp("lm_head")
                .get((cfg.vocab_size, cfg.d_model), "weight")?
        });
        let d_head = cfg.d_model / cfg.n_heads;
        let info = ModelInfo {
            arch: Arch::Gpt2,
            n_layers: cfg.n_layers,
            d_model: cfg.d_model,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_heads,
            d_head,
            d_mlp: cfg.d_mlp,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_positions,
        };
        Ok(Gpt2 {
            cfg,
            info,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            device,
        })
    }

    fn attention(
        &self,
        layer: usize,
        x: &Tensor,
        offset: usize,
        kv: Option<&mut KvCache>,
        mask: Option<&Tensor>,
        hooks: &Hooks,
        cache: &mut ActivationCache,
    ) -> candle_core::Result<Tensor> {
        let blk = &self.blocks[layer];
        let (b, t, d) = x.dims3()?;
        let (h, dh) = (self.cfg.n_heads, self.info.d_head);
        let qkv = ops::linear(x, &blk.c_attn_w, Some(&blk.c_attn_b))?; // [b, t, 3d]
        let q = qkv.narrow(D::Minus1, 0, d)?.reshape((b, t, h, dh))?;
        let k = qkv.narrow(D::Minus1, d, d)?.reshape((b, t, h, dh))?;
        let v = qkv.narrow(D::Minus1, 2 * d, d)?.reshape((b, t, h, dh))?;
        let q = hooks.apply(HookPoint::AttnQ(layer), q, offset, cache)?;
        let k = hooks.apply(HookPoint::AttnK(layer), k, offset, cache)?;
        let v = hooks.apply(HookPoint::AttnV(layer), v, offset, cache)?;
        let fused =
            attention::applies(&[&q, &k, &v]) && !hooks.touches(HookPoint::AttnPattern(layer));
        let k = k.transpose(1, 2)?.contiguous()?; // [b, h, t, dh]
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = match kv {
            Some(kv) => kv.append(layer, k, v)?,
            None => (k, v),
        };
        let scale = 1.0 / (dh as f64).sqrt();
        let z = if fused {
            attention::attend(&q, &k, &v, mask, scale)? // q as [b, t, h, dh]
        } else {
            let q = q.transpose(1, 2)?.contiguous()?;
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(mask) = mask {
                scores = scores.broadcast_add(mask)?;
            }
            let pattern = ops::softmax_last_dim(&scores)?;
            let pattern = hooks.apply(HookPoint::AttnPattern(layer), pattern, offset, cache)?;
            pattern.matmul(&v)?.transpose(1, 2)? // [b, t, h, dh]
        };
        let z = hooks.apply(HookPoint::AttnZ(layer), z, offset, cache)?;
        ops::linear(&z.reshape((b, t, d))?, &blk.c_proj_w, Some(&blk.c_proj_b))
    }

    /// Block `l` on the residual stream entering it: `hook_resid_pre` to `hook_resid_post`.
    fn block(
        &self,
        l: usize,
        resid: Tensor,
        offset: usize,
        kv: Option<&mut KvCache>,
        mask: Option<&Tensor>,
        hooks: &Hooks,
        cache: &mut ActivationCache,
    ) -> candle_core::Result<Tensor> {
        let blk = &self.blocks[l];
        let resid_pre = hooks.apply(HookPoint::ResidPre(l), resid, offset, cache)?;
        let h = ops::layer_norm(&resid_pre, &blk.ln1.w, &blk.ln1.b, self.cfg.eps)?;
        let attn = self.attention(l, &h, offset, kv, mask, hooks, cache)?;
        let attn = hooks.apply(HookPoint::AttnOut(l), attn, offset, cache)?;
        let resid_mid = hooks.apply(HookPoint::ResidMid(l), (resid_pre + attn)?, offset, cache)?;
        let h = ops::layer_norm(&resid_mid, &blk.ln2.w, &blk.ln2.b, self.cfg.eps)?;
        let pre = ops::linear(&h, &blk.fc_w, Some(&blk.fc_b))?;
        let pre = hooks.apply(HookPoint::MlpPre(l), pre, offset, cache)?;
        let post = hooks.apply(HookPoint::MlpPost(l), pre.gelu()?, offset, cache)?;
        let mlp = ops::linear(&post, &blk.proj_w, Some(&blk.proj_b))?;
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
                let tok = self.wte.index_select(&ids.flatten_all()?, 0)?.reshape((
                    b,
                    t,
                    self.cfg.d_model,
                ))?;
                // hook_embed holds token + position embeddings, as in TransformerLens'
                // hook_embed + hook_pos_embed summed into resid_pre of block 0.
                let x = match kv.as_ref().and_then(|kv| kv.row_positions(t, offset)) {
                    Some(pos) => {
                        let idx = Tensor::new(pos.as_slice(), &self.device)?;
                        (tok + self.wpe.index_select(&idx, 0)?.reshape((
                            b,
                            t,
                            self.cfg.d_model,
                        ))?)?
                    }
                    None => tok.broadcast_add(&self.wpe.narrow(0, offset, t)?)?,
                }; // [b, t, d]
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
                mask.as_ref(),
                hooks,
                &mut cache,
            )?;
        }
        super::prefix_memo::finish(call, kv);
        let logits = super::logits_at(at, &resid, self.lm_head.tensor().dim(0)?, |h| {
            self.unembed_inner(h)
        })?;
        Ok(ForwardOutput { logits, cache })
    }

    fn unembed_inner(&self, resid: &Tensor) -> candle_core::Result<Tensor> {
        let h = ops::layer_norm(resid, &self.ln_f.w, &self.ln_f.b, self.cfg.eps)?;
        ops::linear(&h, &self.lm_head, None)
    }
}

impl Transformer for Gpt2 {
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
            self.block(l, x, 0, None, mask.as_ref(), hooks, cache)
        })
    }

    fn unembed(&self, resid: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.unembed_inner(resid)?)
    }

    fn token_embeddings(&self) -> &Tensor {
        &self.wte
    }
}
