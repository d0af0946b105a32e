//! Hugging Face model directories: `config.json` + `*.safetensors` (single file or
//! sharded with `model.safetensors.index.json`) + `tokenizer.json`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::gpt2::{Gpt2, Gpt2ConfigFile};
use super::llama::{Llama, LlamaConfigFile};
use super::{ModelError, Transformer};

pub const SUPPORTED: &str = "llama, gpt2";

#[derive(Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// The safetensors files of a checkpoint directory, in a stable order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = read(&index)?;
        let idx: ShardIndex = serde_json::from_str(&text)
            .map_err(|e| ModelError::config(&index, "weight_map", e.to_string()))?;
        let mut files: Vec<PathBuf> = idx.weight_map.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        for f in &files {
            if !f.exists() {
                return Err(ModelError::NotFound { path: f.clone() });
            }
        }
        return Ok(files);
    }
    Err(ModelError::NotFound { path: single })
}

pub fn read(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::NotFound {
            path: path.to_path_buf(),
        },
        _ => ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ModelError> {
    serde_json::from_str(text).map_err(|e| {
        // serde names the missing or mistyped field in its message.
        ModelError::config(
            path,
            format!("line {} column {}", e.line(), e.column()),
            e.to_string(),
        )
    })
}

/// Load the model in `dir` as f32.
pub fn load_dir(dir: &Path, dev: &Device) -> Result<Box<dyn Transformer>, ModelError> {
    let cfg_path = dir.join("config.json");
    let text = read(&cfg_path)?;
    let mt: ModelType = parse(&cfg_path, &text)?;
    let arch = mt.model_type.ok_or_else(|| {
        ModelError::config(
            &cfg_path,
            "model_type",
            "missing (cannot tell the architecture)",
        )
    })?;
    let files = weight_files(dir)?;
    // SAFETY (both blocks): the files are memory-mapped read-only; they must not change
    // while loaded, which holds for checkpoints in a cache or model directory.
    // Each file's header is checked on its own first, so a truncated file names itself.
    for f in &files {
        unsafe { candle_core::safetensors::MmapedSafetensors::new(f) }
            .map_err(|e| ModelError::weights(f, format!("not a readable safetensors file: {e}")))?;
    }
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, dev) }
        .map_err(|e| ModelError::weights(&files[0], e))?;
    let shown = if files.len() == 1 {
        files[0].clone()
    } else {
        dir.to_path_buf()
    };
    match arch.as_str() {
        "llama" => {
            let cfg = parse::<LlamaConfigFile>(&cfg_path, &text)?.into_config(&cfg_path)?;
            Ok(Box::new(
                Llama::load(vb, cfg).map_err(|e| ModelError::weights(&shown, e))?,
            ))
        }
        "gpt2" => {
            let cfg = parse::<Gpt2ConfigFile>(&cfg_path, &text)?.into_config(&cfg_path)?;
            Ok(Box::new(
                Gpt2::load(vb, cfg).map_err(|e| ModelError::weights(&shown, e))?,
            ))
        }
        other => Err(ModelError::UnknownArch {
            path: cfg_path,
            arch: other.to_string(),
            supported: SUPPORTED,
        }),
    }
}
