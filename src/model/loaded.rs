//! A model ready to run: weights, tokenizer, device, and where it came from.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::gguf::{self, GgufFile};
use super::hooks::Hooks;
use super::llama::Llama;
use super::source::{LocalModel, ModelSource};
use super::tokenizer::Tokenizer;
use super::{ForwardOutput, LogitsAt, ModelError, Transformer};

pub struct LoadedModel {
    /// What the user asked for (`smollm2-135m-instruct`, a path, `hf:…`).
    pub name: String,
    /// The weights file or directory actually read.
    pub path: PathBuf,
    pub model: Box<dyn Transformer>,
    pub tokenizer: Tokenizer,
}

/// `cpu`, `cuda` or `cuda:N`; `auto` takes the first CUDA device when built with the
/// `cuda` feature and one is present, else the CPU.
pub fn device(spec: &str) -> Result<Device, ModelError> {
    let bad = |m: String| ModelError::Device {
        spec: spec.to_string(),
        message: m,
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ord = s
                .strip_prefix("cuda:")
                .map(|n| {
                    n.parse::<usize>()
                        .map_err(|_| bad("bad device ordinal".into()))
                })
                .transpose()?
                .unwrap_or(0);
            Device::new_cuda(ord).map_err(|e| {
                bad(format!(
                    "CUDA device {ord} unavailable ({}); build with --features cuda on a machine with a GPU",
                    e.to_string().lines().next().unwrap_or_default()
                ))
            })
        }
        _ => Err(bad("expected cpu, cuda, cuda:N or auto".into())),
    }
}

impl LoadedModel {
    /// Resolve and load `spec` (see [`ModelSource`]) on `dev`.
    pub fn load(spec: &str, dev: &Device) -> Result<Self, ModelError> {
        let source: ModelSource = spec.parse()?;
        let local = source.resolve()?;
        Self::load_local(spec, &local, dev)
    }

    pub fn load_local(name: &str, local: &LocalModel, dev: &Device) -> Result<Self, ModelError> {
        match local {
            LocalModel::Gguf(path) => {
                let mut g = GgufFile::open(path)?;
                let arch = g.architecture()?;
                let tokenizer = Tokenizer::from_gguf(&g)?;
                let model: Box<dyn Transformer> = match arch.as_str() {
                    "llama" => {
                        let cfg = gguf::llama_config(&g)?;
                        let weights = gguf::llama_weights(&mut g, &cfg, dev)?;
                        let vb = VarBuilder::from_tensors(weights, candle_core::DType::F32, dev);
                        Box::new(Llama::load(vb, cfg).map_err(|e| ModelError::weights(path, e))?)
                    }
                    "gemma3" => {
                        let cfg = gguf::gemma3_config(&g)?;
                        Box::new(gguf::gemma3_model(&mut g, cfg, dev)?)
                    }
                    _ => {
                        return Err(ModelError::UnknownArch {
                            path: path.clone(),
                            arch,
                            supported: "llama, gemma3",
                        })
                    }
                };
                Ok(LoadedModel {
                    name: name.to_string(),
                    path: path.clone(),
                    model,
                    tokenizer,
                })
            }
            LocalModel::HfDir(dir) => {
                let model = super::hf::load_dir(dir, dev)?;
                let tokenizer = Tokenizer::from_hf_dir(dir)?;
                Ok(LoadedModel {
                    name: name.to_string(),
                    path: dir.clone(),
                    model,
                    tokenizer,
                })
            }
        }
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// Token ids of `text` as this model's input (after BOS where the model expects
    /// one); text with no tokens is an error (nothing to run on).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        if self.encode_plain(text)?.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        self.tokenizer.encode_input(text)
    }

    /// Token ids of `text` alone, without BOS (a rolling window adds its own); empty
    /// is an error.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let ids = self.tokenizer.encode(text)?;
        if ids.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        Ok(ids)
    }

    /// One sequence through the model: logits `[1, t, vocab]`.
    pub fn forward_ids(&self, ids: &[u32], hooks: &Hooks) -> Result<ForwardOutput, ModelError> {
        let t = Tensor::new(ids, self.device())?.unsqueeze(0)?;
        self.model.forward(&t, None, hooks)
    }

    /// Last-position logits of `text` as f32, over the whole vocabulary.
    pub fn last_logits(&self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        let t = Tensor::new(ids, self.device())?.unsqueeze(0)?;
        let out = self
            .model
            .forward_at(&t, None, &Hooks::new(), LogitsAt::Last)?;
        Ok(out
            .logits
            .squeeze(0)?
            .get(0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?)
    }
}
