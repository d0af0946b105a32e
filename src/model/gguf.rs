//! GGUF files: metadata, tokenizer vocabulary and weights, dequantized to f32.
//!
//! Weights are dequantized once at load so that every weight and activation is an
//! ordinary f32 tensor (autograd works through them). Tensor names are mapped to the
//! Hugging Face checkpoint names, and llama.cpp's row permutation of `attn_q`/`attn_k`
//! (its converter reorders rows so that RoPE rotates interleaved pairs) is undone, so the
//! same `llama.rs` serves GGUF and safetensors and `attn.hook_q`/`hook_k` hold the values
//! transformers would show.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use super::gemma3::{Gemma3, Gemma3Block, Gemma3Config};
use super::llama::LlamaConfig;
use super::ops::Weight;
use super::ModelError;

/// An opened GGUF file: its metadata and tensor directory (weights are read on demand).
pub struct GgufFile {
    pub path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::NotFound {
                path: path.to_path_buf(),
            },
            _ => ModelError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| ModelError::weights(path, format!("not a readable GGUF file: {e}")))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    pub fn architecture(&self) -> Result<String, ModelError> {
        self.string("general.architecture")
    }

    pub fn value(&self, key: &str) -> Result<&Value, ModelError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| ModelError::config(&self.path, key, "missing metadata key"))
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    pub fn string(&self, key: &str) -> Result<String, ModelError> {
        self.value(key)?
            .to_string()
            .cloned()
            .map_err(|e| ModelError::config(&self.path, key, e.to_string()))
    }

    pub fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.value(key)?;
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            other => {
                return Err(ModelError::config(
                    &self.path,
                    key,
                    format!("expected an unsigned integer, found {other:?}"),
                ))
            }
        };
        Ok(n as usize)
    }

    /// An f32 field as the decimal it was written from (9.99999975e-6 → 1e-5), so configs
    /// match the Hugging Face `config.json` the file was converted from.
    pub fn f64(&self, key: &str) -> Result<f64, ModelError> {
        let v = self.value(key)?;
        match v {
            Value::F32(x) => Ok(format!("{x}").parse::<f64>().unwrap_or(*x as f64)),
            Value::F64(x) => Ok(*x),
            other => Err(ModelError::config(
                &self.path,
                key,
                format!("expected a float, found {other:?}"),
            )),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, ModelError> {
        match self.value(key)? {
            Value::Bool(b) => Ok(*b),
            other => Err(ModelError::config(
                &self.path,
                key,
                format!("expected a boolean, found {other:?}"),
            )),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>, ModelError> {
        let vals = self
            .value(key)?
            .to_vec()
            .map_err(|e| ModelError::config(&self.path, key, e.to_string()))?;
        vals.iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| ModelError::config(&self.path, key, e.to_string()))
            })
            .collect()
    }

    pub fn i32s(&self, key: &str) -> Result<Vec<i32>, ModelError> {
        let vals = self
            .value(key)?
            .to_vec()
            .map_err(|e| ModelError::config(&self.path, key, e.to_string()))?;
        vals.iter()
            .map(|v| {
                v.to_i32()
                    .map_err(|e| ModelError::config(&self.path, key, e.to_string()))
            })
            .collect()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor's declared shape and type must describe bytes inside the file: checked
    /// before reading, since the header is the file's word (a fuzzer found shapes whose
    /// element count overflows, and sizes far past the end of the file).
    fn check_extent(&self, name: &str) -> Result<(), ModelError> {
        let info = &self.content.tensor_infos[name];
        let dims = info.shape.dims();
        let dtype = info.ggml_dtype;
        let bad = |why: String| {
            ModelError::weights(
                &self.path,
                format!("tensor {name}: shape {dims:?} of {dtype:?}: {why}"),
            )
        };
        let elems = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("its element count overflows".into()))?;
        // An empty tensor is no weight of any model, and candle's reader casts its
        // (empty, unaligned) buffer to blocks: refused here.
        if elems == 0 {
            return Err(bad("it has no elements".into()));
        }
        let block = dtype.block_size();
        if block == 0 || elems % block != 0 {
            return Err(bad(format!(
                "{elems} elements are not whole blocks of {block}"
            )));
        }
        let bytes = (elems / block)
            .checked_mul(dtype.type_size())
            .ok_or_else(|| bad("its size overflows".into()))? as u64;
        let start = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .ok_or_else(|| bad("its offset overflows".into()))?;
        let len = self
            .reader
            .get_ref()
            .metadata()
            .map_err(|e| ModelError::Io {
                path: self.path.clone(),
                source: e,
            })?
            .len();
        match start.checked_add(bytes) {
            Some(end) if end <= len => Ok(()),
            _ => Err(bad(format!(
                "needs {bytes} bytes at offset {start}, the file has {len}"
            ))),
        }
    }

    /// Read and dequantize one tensor to f32, in candle's (PyTorch's) dimension order.
    pub fn tensor_f32(&mut self, name: &str, dev: &Device) -> Result<Tensor, ModelError> {
        if !self.has_tensor(name) {
            return Err(ModelError::weights(
                &self.path,
                format!("missing tensor {name}"),
            ));
        }
        self.check_extent(name)?;
        let q = self
            .content
            .tensor(&mut self.reader, name, dev)
            .map_err(|e| ModelError::weights(&self.path, format!("tensor {name}: {e}")))?;
        q.dequantize(dev)
            .map_err(|e| ModelError::weights(&self.path, format!("tensor {name}: {e}")))
    }
}

/// Llama hyper-parameters from `llama.*` metadata.
pub fn llama_config(g: &GgufFile) -> Result<LlamaConfig, ModelError> {
    let n_heads = g.usize("llama.attention.head_count")?;
    let d_model = g.usize("llama.embedding_length")?;
    let n_kv_heads = if g.has("llama.attention.head_count_kv") {
        g.usize("llama.attention.head_count_kv")?
    } else {
        n_heads
    };
    let d_head = if g.has("llama.attention.key_length") {
        g.usize("llama.attention.key_length")?
    } else {
        d_model / n_heads
    };
    let vocab_size = if g.has("llama.vocab_size") {
        g.usize("llama.vocab_size")?
    } else {
        g.strings("tokenizer.ggml.tokens")?.len()
    };
    if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
        return Err(ModelError::config(
            &g.path,
            "llama.attention.head_count_kv",
            format!("{n_kv_heads} does not divide head_count {n_heads}"),
        ));
    }
    let rope_theta = if g.has("llama.rope.freq_base") {
        g.f64("llama.rope.freq_base")?
    } else {
        10_000.0
    };
    Ok(LlamaConfig {
        d_model,
        d_mlp: g.usize("llama.feed_forward_length")?,
        n_layers: g.usize("llama.block_count")?,
        n_heads,
        n_kv_heads,
        d_head,
        rms_eps: g.f64("llama.attention.layer_norm_rms_epsilon")?,
        rope_theta,
        vocab_size,
        tie_embeddings: !g.has_tensor("output.weight"),
        max_positions: g.usize("llama.context_length")?,
    })
}

/// Undo llama.cpp's q/k row permutation: within each head the GGUF rows are ordered
/// (pair, half) where Hugging Face orders them (half, pair).
fn unpermute_rows(w: &Tensor, n_heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let dh = out / n_heads;
    w.reshape((n_heads, dh / 2, 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))
}

/// All Llama weights, dequantized, under Hugging Face names.
pub fn llama_weights(
    g: &mut GgufFile,
    cfg: &LlamaConfig,
    dev: &Device,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut w = HashMap::new();
    w.insert(
        "model.embed_tokens.weight".into(),
        g.tensor_f32("token_embd.weight", dev)?,
    );
    w.insert(
        "model.norm.weight".into(),
        g.tensor_f32("output_norm.weight", dev)?,
    );
    if !cfg.tie_embeddings {
        w.insert("lm_head.weight".into(), g.tensor_f32("output.weight", dev)?);
    }
    for l in 0..cfg.n_layers {
        let hf = |s: &str| format!("model.layers.{l}.{s}");
        let gg = |s: &str| format!("blk.{l}.{s}");
        let q = g.tensor_f32(&gg("attn_q.weight"), dev)?;
        let k = g.tensor_f32(&gg("attn_k.weight"), dev)?;
        let path = g.path.clone();
        let perm = |t: Tensor, n: usize, name: &str| {
            unpermute_rows(&t, n).map_err(|e| ModelError::weights(&path, format!("{name}: {e}")))
        };
        w.insert(
            hf("self_attn.q_proj.weight"),
            perm(q, cfg.n_heads, "attn_q")?,
        );
        w.insert(
            hf("self_attn.k_proj.weight"),
            perm(k, cfg.n_kv_heads, "attn_k")?,
        );
        for (h, gname) in [
            ("self_attn.v_proj.weight", "attn_v.weight"),
            ("self_attn.o_proj.weight", "attn_output.weight"),
            ("mlp.gate_proj.weight", "ffn_gate.weight"),
            ("mlp.up_proj.weight", "ffn_up.weight"),
            ("mlp.down_proj.weight", "ffn_down.weight"),
            ("input_layernorm.weight", "attn_norm.weight"),
            ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ] {
            w.insert(hf(h), g.tensor_f32(&gg(gname), dev)?);
        }
    }
    Ok(w)
}

/// Gemma 3 hyper-parameters from `gemma3.*` metadata. Two facts the file leaves out are
/// llama.cpp's (and transformers') fixed values for Gemma 3: local layers' RoPE base
/// 10000, and every 6th layer global.
pub fn gemma3_config(g: &GgufFile) -> Result<Gemma3Config, ModelError> {
    let key = |k: &str| format!("gemma3.{k}");
    let opt_f64 = |k: &str| -> Result<Option<f64>, ModelError> {
        let k = key(k);
        if g.has(&k) {
            Ok(Some(g.f64(&k)?).filter(|v| *v > 0.0))
        } else {
            Ok(None)
        }
    };
    let n_heads = g.usize(&key("attention.head_count"))?;
    let n_kv_heads = g.usize(&key("attention.head_count_kv"))?;
    if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
        return Err(ModelError::config(
            &g.path,
            key("attention.head_count_kv"),
            format!("{n_kv_heads} does not divide head_count {n_heads}"),
        ));
    }
    let d_head = g.usize(&key("attention.key_length"))?;
    if g.has(&key("attention.value_length")) && g.usize(&key("attention.value_length"))? != d_head {
        return Err(ModelError::config(
            &g.path,
            key("attention.value_length"),
            "value heads of another width than key heads are not supported",
        ));
    }
    let rope_global_scale = match g.has(&key("rope.scaling.type")) {
        false => 1.0,
        true => match g.string(&key("rope.scaling.type"))?.as_str() {
            "none" => 1.0,
            "linear" => opt_f64("rope.scaling.factor")?.unwrap_or(1.0),
            other => {
                return Err(ModelError::config(
                    &g.path,
                    key("rope.scaling.type"),
                    format!("RoPE scaling '{other}' is not supported (supported: none, linear)"),
                ))
            }
        },
    };
    let vocab_size = if g.has(&key("vocab_size")) {
        g.usize(&key("vocab_size"))?
    } else {
        g.strings("tokenizer.ggml.tokens")?.len()
    };
    if g.has_tensor("output.weight") {
        return Err(ModelError::weights(
            &g.path,
            "an untied output.weight: Gemma 3 ties its unembedding to token_embd",
        ));
    }
    Ok(Gemma3Config {
        d_model: g.usize(&key("embedding_length"))?,
        d_mlp: g.usize(&key("feed_forward_length"))?,
        n_layers: g.usize(&key("block_count"))?,
        n_heads,
        n_kv_heads,
        d_head,
        rms_eps: g.f64(&key("attention.layer_norm_rms_epsilon"))?,
        rope_global: opt_f64("rope.freq_base")?.unwrap_or(1_000_000.0),
        rope_local: 10_000.0,
        rope_global_scale,
        sliding_window: g.usize(&key("attention.sliding_window"))?,
        global_every: 6,
        // Gemma 3 scales scores by query_pre_attn_scalar^-0.5 with the scalar equal to
        // the head width in the released sizes; GGUF does not store it separately.
        query_pre_attn_scalar: d_head as f64,
        attn_softcap: opt_f64("attn_logit_softcapping")?,
        final_softcap: opt_f64("final_logit_softcapping")?,
        vocab_size,
        max_positions: g.usize(&key("context_length"))?,
    })
}

/// A Gemma 3 model from the file's weights, dequantized, each checked against the
/// shape the config implies.
pub fn gemma3_model(
    g: &mut GgufFile,
    cfg: Gemma3Config,
    dev: &Device,
) -> Result<Gemma3, ModelError> {
    let (d, dh, m) = (cfg.d_model, cfg.d_head, cfg.d_mlp);
    let mut get = |name: String, shape: &[usize]| -> Result<Tensor, ModelError> {
        let t = g.tensor_f32(&name, dev)?;
        if t.dims() != shape {
            return Err(ModelError::weights(
                &g.path,
                format!(
                    "tensor {name} has shape {:?}, the config implies {shape:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t)
    };
    let embed = get("token_embd.weight".into(), &[cfg.vocab_size, d])?;
    let norm = get("output_norm.weight".into(), &[d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        blocks.push(Gemma3Block {
            attn_norm: get(n("attn_norm"), &[d])?,
            q: Weight::new(get(n("attn_q"), &[cfg.n_heads * dh, d])?),
            k: Weight::new(get(n("attn_k"), &[cfg.n_kv_heads * dh, d])?),
            v: Weight::new(get(n("attn_v"), &[cfg.n_kv_heads * dh, d])?),
            q_norm: get(n("attn_q_norm"), &[dh])?,
            k_norm: get(n("attn_k_norm"), &[dh])?,
            o: Weight::new(get(n("attn_output"), &[d, cfg.n_heads * dh])?),
            post_attn_norm: get(n("post_attention_norm"), &[d])?,
            mlp_norm: get(n("ffn_norm"), &[d])?,
            gate: Weight::new(get(n("ffn_gate"), &[m, d])?),
            up: Weight::new(get(n("ffn_up"), &[m, d])?),
            down: Weight::new(get(n("ffn_down"), &[d, m])?),
            post_mlp_norm: get(n("post_ffw_norm"), &[d])?,
        });
    }
    let path = g.path.clone();
    Gemma3::new(cfg, embed, blocks, norm).map_err(|e| ModelError::weights(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_the_llama_cpp_permutation() {
        // llama.cpp: w.reshape(n_head, 2, dh/2, in).swapaxes(1, 2).reshape(out, in)
        let dev = Device::Cpu;
        let (n_heads, dh, inp) = (2, 4, 3);
        let hf = Tensor::arange(0f32, (n_heads * dh * inp) as f32, &dev)
            .unwrap()
            .reshape((n_heads * dh, inp))
            .unwrap();
        let gguf = hf
            .reshape((n_heads, 2, dh / 2, inp))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((n_heads * dh, inp))
            .unwrap();
        let back = unpermute_rows(&gguf, n_heads).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
    }
}
