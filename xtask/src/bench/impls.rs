//! The implementations under comparison, behind one interface: forward ids `[b, t]`
//! continuing a KV cache, get last-position logits `[b, vocab]`.
//!
//! Only the last position is returned because that is all the two candle models give;
//! ours computes logits at every position (hooks and scorers need them), and that extra
//! unembedding work stays inside its timings on purpose.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama as cllama, quantized_llama};
use scalpel::model::llama::LlamaConfig;
use scalpel::model::{Hooks, KvCache, LoadedModel, LogitsAt, Transformer};

pub trait Lm {
    fn name(&self) -> &str;
    /// Forget every cached position (a new sequence starts at position 0).
    fn reset(&mut self) -> Result<()>;
    /// Forward `ids` `[b, t]` after the cached positions; logits of the last one, f32.
    fn step(&mut self, ids: &Tensor) -> Result<Tensor>;
    /// Our model as the `Transformer` that scalpel's own APIs (sampling) take; `None`
    /// for the candle models, which only run the shared workloads.
    fn scalpel(&self) -> Option<&dyn Transformer> {
        None
    }
}

/// Our hooked transformer, run with no hooks (the fast path a plain generation takes).
pub struct Ours {
    pub model: LoadedModel,
    kv: KvCache,
    hooks: Hooks,
}

impl Ours {
    pub fn new(model: LoadedModel) -> Ours {
        let kv = model.model.new_kv_cache();
        Ours {
            model,
            kv,
            hooks: Hooks::new(),
        }
    }
}

impl Lm for Ours {
    fn name(&self) -> &str {
        "scalpel f32"
    }

    fn reset(&mut self) -> Result<()> {
        self.kv = self.model.model.new_kv_cache();
        Ok(())
    }

    /// Last-position logits only, as the candle models compute them (scoring paths
    /// that need every position pay for the full unembedding; see the extra row).
    fn step(&mut self, ids: &Tensor) -> Result<Tensor> {
        let out =
            self.model
                .model
                .forward_at(ids, Some(&mut self.kv), &self.hooks, LogitsAt::Last)?;
        Ok(out.logits.i((.., 0, ..))?.to_dtype(DType::F32)?)
    }

    fn scalpel(&self) -> Option<&dyn Transformer> {
        Some(self.model.model.as_ref())
    }
}

/// candle-transformers' f32 `llama::Llama` over the very tensors ours dequantized, so
/// that any speed difference is the forward pass, not the weights.
pub struct CandleF32 {
    model: cllama::Llama,
    cfg: cllama::Config,
    cache: cllama::Cache,
    pos: usize,
    dev: Device,
}

/// Our resolved config in candle-transformers' terms. Its llama derives the head size as
/// hidden / heads and has no separate `head_dim`, so a model where they differ cannot be
/// compared this way.
pub fn candle_config(c: &LlamaConfig) -> Result<cllama::Config> {
    if c.d_head * c.n_heads != c.d_model {
        bail!(
            "candle-transformers' llama assumes head_dim = hidden / heads, but this model has \
             head_dim {} with hidden {} and {} heads",
            c.d_head,
            c.d_model,
            c.n_heads
        );
    }
    Ok(cllama::Config {
        hidden_size: c.d_model,
        intermediate_size: c.d_mlp,
        vocab_size: c.vocab_size,
        num_hidden_layers: c.n_layers,
        num_attention_heads: c.n_heads,
        num_key_value_heads: c.n_kv_heads,
        use_flash_attn: false,
        rms_norm_eps: c.rms_eps,
        rope_theta: c.rope_theta as f32,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: c.max_positions,
        tie_word_embeddings: c.tie_embeddings,
    })
}

impl CandleF32 {
    /// `weights` under Hugging Face names with q/k rows in Hugging Face order (what
    /// `scalpel::model::gguf::llama_weights` returns); candle's llama applies RoPE in the
    /// same rotate-half layout.
    pub fn new(weights: HashMap<String, Tensor>, c: &LlamaConfig, dev: &Device) -> Result<Self> {
        let cfg = candle_config(c)?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, dev);
        let model = cllama::Llama::load(vb, &cfg).context("candle-transformers llama::load")?;
        let cache = cllama::Cache::new(true, DType::F32, &cfg, dev)?;
        Ok(CandleF32 {
            model,
            cfg,
            cache,
            pos: 0,
            dev: dev.clone(),
        })
    }
}

impl Lm for CandleF32 {
    fn name(&self) -> &str {
        "candle llama f32"
    }

    fn reset(&mut self) -> Result<()> {
        // The cache also holds the RoPE tables; rebuilding it is the only public way to
        // drop the cached keys and values, and it happens outside the timed region.
        self.cache = cllama::Cache::new(true, DType::F32, &self.cfg, &self.dev)?;
        self.pos = 0;
        Ok(())
    }

    fn step(&mut self, ids: &Tensor) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let logits = self.model.forward(ids, self.pos, &mut self.cache)?;
        self.pos += t;
        Ok(logits)
    }
}

/// candle-transformers' `quantized_llama` on the GGUF as shipped: what a candle user runs
/// on this file. Its matmuls read the quantized blocks directly.
pub struct CandleQuant {
    model: quantized_llama::ModelWeights,
    name: String,
    pos: usize,
}

impl CandleQuant {
    pub fn load(path: &Path, dtype_label: &str, dev: &Device) -> Result<Self> {
        let mut f =
            std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let ct = gguf_file::Content::read(&mut f)
            .with_context(|| format!("read GGUF {}", path.display()))?;
        let model = quantized_llama::ModelWeights::from_gguf(ct, &mut f, dev)
            .context("candle-transformers quantized_llama::from_gguf")?;
        Ok(CandleQuant {
            model,
            name: format!("candle quantized_llama {dtype_label}"),
            pos: 0,
        })
    }
}

impl Lm for CandleQuant {
    fn name(&self) -> &str {
        &self.name
    }

    fn reset(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        self.pos = 0;
        Ok(())
    }

    fn step(&mut self, ids: &Tensor) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let logits = self.model.forward(ids, self.pos)?;
        self.pos += t;
        Ok(logits.to_dtype(DType::F32)?)
    }
}
