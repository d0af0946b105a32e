//! A fitted intervention on disk: `DIR/intervention.safetensors` (its tensors) and
//! `DIR/intervention.yaml` (a manifest: kind, sites, the model it was fitted on, the
//! hyperparameters, the hashes of the data it saw, the training curve). Loading checks
//! the model's fingerprint and the tensors' hash, so an intervention is never silently
//! applied to another model or read from a corrupted file.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::select::SiteEffect;
use super::{AblateMode, Intervention, Kind, LoraEdit, LowRankEdit};
use crate::model::{HookPoint, LoadedModel};

pub const MANIFEST: &str = "intervention.yaml";
pub const TENSORS: &str = "intervention.safetensors";
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Tensors { path: PathBuf, message: String },
    #[error(
        "{path}: fitted on model '{fitted_name}' (fingerprint {fitted}), not on '{name}' \
         (fingerprint {actual}); refit it on this model, or declare a transfer if the models' \
         shapes allow one"
    )]
    WrongModel {
        path: PathBuf,
        fitted_name: String,
        fitted: String,
        name: String,
        actual: String,
    },
}

/// How an artefact fitted on one model may be applied to another. Without one, another
/// model is an error; with one, the shapes must still allow it (the same width, and for
/// `same_sites` the same depth), since a vector of one model's residual stream means
/// nothing in a stream of another width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transfer {
    /// The same sites: another version of the same architecture (a fine-tune, a
    /// re-quantization).
    SameSites,
    /// Each site moved to the layer at the same fraction of the other model's depth.
    ByDepth,
}

impl std::str::FromStr for Transfer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "same_sites" => Ok(Transfer::SameSites),
            "by_depth" => Ok(Transfer::ByDepth),
            _ => Err(format!("transfer '{s}' is not same_sites or by_depth")),
        }
    }
}

/// The model an intervention was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    pub name: String,
    /// sha256 of the weights file(s) (see [`model_fingerprint`]).
    pub fingerprint: String,
    pub d_model: usize,
    pub n_layers: usize,
}

/// A dataset slice the fit saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRecord {
    pub task: String,
    pub split: String,
    pub n: usize,
    /// sha256 over the item keys in order.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    pub step: usize,
    pub loss: f64,
    #[serde(default)]
    pub parts: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Training {
    pub steps: usize,
    pub seconds: f64,
    pub seed: u64,
    #[serde(default)]
    pub stopped_early: bool,
    #[serde(default)]
    pub curve: Vec<CurvePoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub kind: Kind,
    pub model: ModelRecord,
    /// Hook point names, e.g. `blocks.12.hook_resid_post`.
    pub sites: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablate_mode: Option<AblateMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// LoRA's scale `s` in `s·B A x`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_scale: Option<f64>,
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, f64>,
    #[serde(default)]
    pub data: Vec<DataRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// The site sweep that chose `sites`, most selective first (empty when the config
    /// named them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selection: Vec<SiteEffect>,
    /// sha256 of the safetensors file.
    pub tensors_sha256: String,
}

/// What a fit knows beyond the intervention itself.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub hyperparameters: BTreeMap<String, f64>,
    pub data: Vec<DataRecord>,
    pub training: Option<Training>,
    pub selection: Vec<SiteEffect>,
}

/// sha256 of a model's weights: the file for a GGUF, `config.json` and the safetensors
/// shards in name order for a Hugging Face directory.
pub fn model_fingerprint(model: &LoadedModel) -> Result<String, ArtifactError> {
    // A run asks once per fit and attack; the weights are hundreds of MB, so the hash is
    // kept per path for as long as the path's size and modification time stay the same.
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Seen = HashMap<PathBuf, (u64, Option<std::time::SystemTime>, String)>;
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let stamp = std::fs::metadata(&model.path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()));
    let seen = SEEN.get_or_init(|| Mutex::new(HashMap::new()));
    if let (Some((len, mtime)), Ok(map)) = (stamp, seen.lock()) {
        if let Some((l, t, hash)) = map.get(&model.path) {
            if *l == len && *t == mtime && model.path.is_file() {
                return Ok(hash.clone());
            }
        }
    }
    let hash = hash_model_files(model)?;
    if let (Some((len, mtime)), Ok(mut map)) = (stamp, seen.lock()) {
        map.insert(model.path.clone(), (len, mtime, hash.clone()));
    }
    Ok(hash)
}

fn hash_model_files(model: &LoadedModel) -> Result<String, ArtifactError> {
    let mut h = Sha256::new();
    let files: Vec<PathBuf> = if model.path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&model.path)
            .map_err(|e| io(&model.path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                n == "config.json" || n.ends_with(".safetensors")
            })
            .collect();
        v.sort();
        v
    } else {
        vec![model.path.clone()]
    };
    for f in files {
        hash_file(&f, &mut h)?;
    }
    Ok(hex(&h.finalize()))
}

fn hash_file(path: &Path, h: &mut Sha256) -> Result<(), ArtifactError> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn io(path: &Path, source: std::io::Error) -> ArtifactError {
    ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 over item keys in order: what a [`DataRecord`] stores.
pub fn keys_sha256<S: AsRef<str>>(keys: &[S]) -> String {
    let mut h = Sha256::new();
    for k in keys {
        h.update(k.as_ref().as_bytes());
        h.update([0u8]);
    }
    hex(&h.finalize())
}

/// Write `iv` fitted on `model` into `dir` (created if needed); returns the manifest.
pub fn save(
    dir: &Path,
    iv: &Intervention,
    model: &LoadedModel,
    prov: &Provenance,
) -> Result<Manifest, ArtifactError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tpath = dir.join(TENSORS);
    // Contiguous f32 copies: what a reload gives back bit for bit.
    let tensors: HashMap<String, Tensor> = iv
        .tensors()
        .into_iter()
        .map(|(k, t)| {
            let t = t
                .to_dtype(DType::F32)?
                .to_device(&candle_core::Device::Cpu)?
                .contiguous()?;
            Ok((k, t))
        })
        .collect::<candle_core::Result<_>>()
        .map_err(|e| tensors_err(&tpath, e))?;
    // Tensors first, then the manifest, each written beside its name and renamed: the
    // manifest is what marks the artefact complete, so a process killed mid-save leaves
    // no manifest (a fixture is refitted) rather than one describing half a file.
    let _ = std::fs::remove_file(dir.join(MANIFEST));
    let tmp = dir.join(format!(".{TENSORS}.tmp{}", std::process::id()));
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| tensors_err(&tpath, e))?;
    let mut h = Sha256::new();
    hash_file(&tmp, &mut h)?;
    std::fs::rename(&tmp, &tpath).map_err(|e| io(&tpath, e))?;
    let info = model.model.info();
    let manifest = Manifest {
        format: FORMAT,
        kind: iv.kind(),
        model: ModelRecord {
            name: model.name.clone(),
            fingerprint: model_fingerprint(model)?,
            d_model: info.d_model,
            n_layers: info.n_layers,
        },
        sites: iv.points().iter().map(|p| p.to_string()).collect(),
        ablate_mode: match iv {
            Intervention::Ablate { mode, .. } => Some(*mode),
            _ => None,
        },
        alpha: match iv {
            Intervention::Offset { alpha, .. } => Some(*alpha),
            _ => None,
        },
        lora_scale: match iv {
            Intervention::Lora { sites } => sites.first().map(|s| s.1.scale),
            _ => None,
        },
        hyperparameters: prov.hyperparameters.clone(),
        data: prov.data.clone(),
        training: prov.training.clone(),
        selection: prov.selection.clone(),
        tensors_sha256: hex(&h.finalize()),
    };
    let mpath = dir.join(MANIFEST);
    let text = serde_saphyr::to_string(&manifest).map_err(|e| ArtifactError::Manifest {
        path: mpath.clone(),
        message: e.to_string(),
    })?;
    crate::store::write_atomic(&mpath, text.as_bytes()).map_err(|e| match e {
        crate::store::StoreError::Io { path, source } => io(&path, source),
        other => ArtifactError::Manifest {
            path: mpath.clone(),
            message: other.to_string(),
        },
    })?;
    Ok(manifest)
}

fn tensors_err(path: &Path, e: impl std::fmt::Display) -> ArtifactError {
    ArtifactError::Tensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Read the manifest of the artifact in `dir` (no tensors, no model check).
pub fn read_manifest(dir: &Path) -> Result<Manifest, ArtifactError> {
    let mpath = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&mpath).map_err(|e| io(&mpath, e))?;
    let m: Manifest = serde_saphyr::from_str(&text).map_err(|e| ArtifactError::Manifest {
        path: mpath.clone(),
        message: e.to_string(),
    })?;
    if m.format != FORMAT {
        return Err(ArtifactError::Manifest {
            path: mpath,
            message: format!("format {} (this scalpel reads format {FORMAT})", m.format),
        });
    }
    Ok(m)
}

/// Load the artifact in `dir` for `model`: the model must be the one it was fitted on,
/// and the tensors must hash to what the manifest says.
pub fn load(dir: &Path, model: &LoadedModel) -> Result<(Intervention, Manifest), ArtifactError> {
    load_onto(dir, model, None)
}

/// [`load`], or, with a declared `transfer`, onto another model whose shapes allow it:
/// the sites are mapped as the transfer says and every tensor is checked against this
/// model's shapes.
pub fn load_onto(
    dir: &Path,
    model: &LoadedModel,
    transfer: Option<Transfer>,
) -> Result<(Intervention, Manifest), ArtifactError> {
    let mut m = read_manifest(dir)?;
    let mpath = dir.join(MANIFEST);
    let actual = model_fingerprint(model)?;
    let info = model.model.info();
    let transferred = actual != m.model.fingerprint;
    let map_layer: Box<dyn Fn(usize) -> usize> = match (actual == m.model.fingerprint, transfer) {
        (true, _) => Box::new(|l| l),
        (false, None) => {
            return Err(ArtifactError::WrongModel {
                path: mpath,
                fitted_name: m.model.name.clone(),
                fitted: short(&m.model.fingerprint),
                name: model.name.clone(),
                actual: short(&actual),
            })
        }
        (false, Some(t)) => {
            let (from, to) = (m.model.n_layers, info.n_layers);
            if m.model.d_model != info.d_model {
                return Err(ArtifactError::Manifest {
                    path: mpath,
                    message: format!(
                        "transfer {t:?}: fitted on '{}' with width {}, '{}' has width {}; \
                         no mapping carries a residual-stream edit across widths",
                        m.model.name, m.model.d_model, model.name, info.d_model
                    ),
                });
            }
            match t {
                Transfer::SameSites if from != to => {
                    return Err(ArtifactError::Manifest {
                        path: mpath,
                        message: format!(
                            "transfer same_sites: fitted on {from} layers, '{}' has {to}; \
                             use by_depth",
                            model.name
                        ),
                    })
                }
                Transfer::SameSites => Box::new(|l| l),
                Transfer::ByDepth => Box::new(move |l| {
                    let f = l as f64 / (from.max(2) - 1) as f64;
                    (f * (to.max(1) - 1) as f64).round() as usize
                }),
            }
        }
    };
    let tpath = dir.join(TENSORS);
    let mut h = Sha256::new();
    hash_file(&tpath, &mut h)?;
    let got = hex(&h.finalize());
    if got != m.tensors_sha256 {
        return Err(tensors_err(
            &tpath,
            format!(
                "sha256 {} does not match the manifest's {}: the file is corrupt or was replaced",
                short(&got),
                short(&m.tensors_sha256)
            ),
        ));
    }
    let mut tensors = candle_core::safetensors::load(&tpath, model.device())
        .map_err(|e| tensors_err(&tpath, e))?;
    let d = model.model.info().d_model;
    let bad = |message: String| ArtifactError::Manifest {
        path: mpath.clone(),
        message,
    };
    // Tensors are stored under the sites they were fitted at; `sites` pairs each with
    // where it applies on this model.
    let mut sites = Vec::with_capacity(m.sites.len());
    for s in &m.sites {
        let p: HookPoint = s.parse().map_err(|e| bad(format!("sites: {e}")))?;
        let here = match p.layer() {
            Some(l) => p.with_layer(map_layer(l)),
            None => p,
        };
        if here.layer().is_some_and(|l| l >= info.n_layers) {
            return Err(bad(format!(
                "sites: {s} is past the last layer of '{}' ({} layers)",
                model.name, info.n_layers
            )));
        }
        sites.push((p, here));
    }
    let mut take = |name: String| {
        tensors
            .remove(&name)
            .ok_or_else(|| tensors_err(&tpath, format!("no tensor '{name}'")))
    };
    let vector = |t: Tensor, name: &str| -> Result<Tensor, ArtifactError> {
        if t.dims() != [d] {
            return Err(tensors_err(
                &tpath,
                format!("'{name}' has shape {:?}, expected [{d}]", t.dims()),
            ));
        }
        Ok(t)
    };
    let iv = match m.kind {
        Kind::None => Intervention::None,
        Kind::Ablate => {
            let mode = m
                .ablate_mode
                .ok_or_else(|| bad("ablate_mode: missing for kind ablate".into()))?;
            let mut v = Vec::new();
            for (p, here) in &sites {
                let t = match mode {
                    AblateMode::Zero => None,
                    _ => {
                        let name = format!("{p}.vector");
                        Some(vector(take(name.clone())?, &name)?)
                    }
                };
                v.push((*here, t));
            }
            Intervention::Ablate { mode, sites: v }
        }
        Kind::Offset => {
            let alpha = m
                .alpha
                .ok_or_else(|| bad("alpha: missing for kind offset".into()))?;
            let mut v = Vec::new();
            for (p, here) in &sites {
                let name = format!("{p}.vector");
                v.push((*here, vector(take(name.clone())?, &name)?));
            }
            Intervention::Offset { alpha, sites: v }
        }
        Kind::LowRank => {
            let mut v = Vec::new();
            for (p, here) in &sites {
                let e = LowRankEdit {
                    r: take(format!("{p}.R"))?,
                    w: take(format!("{p}.W"))?,
                    b: take(format!("{p}.b"))?,
                };
                e.check(d)
                    .map_err(|msg| tensors_err(&tpath, format!("{p}: {msg}")))?;
                v.push((*here, e));
            }
            Intervention::LowRank { sites: v }
        }
        Kind::Lora => {
            let scale = m
                .lora_scale
                .ok_or_else(|| bad("lora_scale: missing for kind lora".into()))?;
            let mut v = Vec::new();
            for (p, here) in &sites {
                let d_in = match p {
                    HookPoint::MlpOut(_) => info.d_mlp,
                    HookPoint::AttnOut(_) => info.n_heads * info.d_head,
                    other => {
                        return Err(bad(format!(
                            "sites: {other} is not a LoRA site (hook_mlp_out or hook_attn_out)"
                        )))
                    }
                };
                let e = LoraEdit {
                    a: take(format!("{p}.A"))?,
                    b: take(format!("{p}.B"))?,
                    scale,
                };
                e.check(d_in, d)
                    .map_err(|msg| tensors_err(&tpath, format!("{p}: {msg}")))?;
                v.push((*here, e));
            }
            Intervention::Lora { sites: v }
        }
    };
    if transferred {
        // The manifest still names the model it was fitted on; its sites say where the
        // edit now applies.
        m.sites = sites.iter().map(|(_, here)| here.to_string()).collect();
    }
    Ok((iv, m))
}

fn short(h: &str) -> String {
    h.chars().take(12).collect()
}
