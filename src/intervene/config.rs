//! `scalpel fit --config FILE`: what to fit, where, on which fit-split data. A config is
//! YAML with unknown fields rejected; every error names the file, line and column.
//!
//! ```yaml
//! kind: low_rank            # offset | ablate | low_rank | lora (low_rank's options)
//! sites: [blocks.10.hook_resid_post]
//! harmful:  [{task: realtoxicityprompts, limit: 200}]
//! harmless: [{task: perplexity_wiki, limit: 200}]
//! max_tokens: 48
//! offset: {alpha: 4.0}
//! ablate: {mode: direction}
//! low_rank: {rank: 4, steps: 150, lr: 0.005}
//! ```
//!
//! Texts come from [`crate::tasks::load_fit`]: only the fit split ever reaches a fit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::artifact::{self, ArtifactError, DataRecord, Manifest, Provenance};
use super::fit::{self, Contrast, FitError, LowRankConfig};
use super::select::{self, SelectConfig};
use super::{AblateMode, Intervention, Kind};
use crate::model::{HookPoint, LoadedModel};
use crate::tasks::{self, LoadOptions, TaskError, TaskId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitConfig {
    /// The file it was read from, for errors found once the model is known (not part of
    /// the config: the fixture cache's key leaves it out).
    #[serde(skip)]
    pub path: Option<PathBuf>,
    pub kind: Kind,
    /// Hook points to fit at; or leave out and give `select`.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Choose the sites by a causal sweep over layers (see [`super::select`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<SelectConfig>,
    pub harmful: Vec<DataSpec>,
    pub harmless: Vec<DataSpec>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default)]
    pub offset: OffsetConfig,
    #[serde(default)]
    pub ablate: AblateConfig,
    #[serde(default)]
    pub low_rank: LowRankYaml,
}

fn default_max_tokens() -> usize {
    48
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub task: String,
    #[serde(default)]
    pub limit: Option<usize>,
    /// A local file or directory instead of the task's default data.
    #[serde(default)]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetConfig {
    /// The strength; ignored when `alphas` is given.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Candidate strengths: the largest whose perplexity on held-out harmless fit texts
    /// rises by at most `max_perplexity_increase` is taken.
    #[serde(default)]
    pub alphas: Vec<f64>,
    #[serde(default = "default_max_ppl")]
    pub max_perplexity_increase: f64,
}

fn default_alpha() -> f64 {
    1.0
}

fn default_max_ppl() -> f64 {
    0.05
}

impl Default for OffsetConfig {
    fn default() -> Self {
        OffsetConfig {
            alpha: default_alpha(),
            alphas: Vec::new(),
            max_perplexity_increase: default_max_ppl(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblateConfig {
    pub mode: AblateMode,
}

impl Default for AblateConfig {
    fn default() -> Self {
        AblateConfig {
            mode: AblateMode::Direction,
        }
    }
}

/// [`LowRankConfig`] with every field optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LowRankYaml {
    pub rank: Option<usize>,
    pub steps: Option<usize>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub batch: Option<usize>,
    pub target_layer: Option<usize>,
    pub retain_weight: Option<f64>,
    pub heldout: Option<f64>,
    pub eval_every: Option<usize>,
    pub patience: Option<usize>,
    pub seed: Option<u64>,
}

impl LowRankYaml {
    pub fn resolve(&self, max_tokens: usize) -> LowRankConfig {
        let d = LowRankConfig::default();
        LowRankConfig {
            form: d.form,
            rank: self.rank.unwrap_or(d.rank),
            steps: self.steps.unwrap_or(d.steps),
            lr: self.lr.unwrap_or(d.lr),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
            batch: self.batch.unwrap_or(d.batch),
            max_tokens,
            target_layer: self.target_layer.or(d.target_layer),
            retain_weight: self.retain_weight.unwrap_or(d.retain_weight),
            heldout: self.heldout.unwrap_or(d.heldout),
            eval_every: self.eval_every.unwrap_or(d.eval_every),
            patience: self.patience.unwrap_or(d.patience),
            seed: self.seed.unwrap_or(d.seed),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

impl FitConfig {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut c: FitConfig = serde_saphyr::from_str(&text).map_err(|e| bad(e.to_string()))?;
        c.path = Some(path.to_path_buf());
        c.sites().map_err(bad)?;
        if c.harmful.is_empty() || c.harmless.is_empty() {
            return Err(bad(
                "harmful and harmless: each needs at least one task".into()
            ));
        }
        if c.kind == Kind::None {
            return Err(bad("kind: none has nothing to fit".into()));
        }
        Ok(c)
    }

    /// The configured sites (empty when `select` chooses them).
    pub fn sites(&self) -> Result<Vec<HookPoint>, String> {
        match (&self.select, self.sites.is_empty()) {
            (Some(_), false) => return Err("give either sites or select, not both".into()),
            (Some(_), true) => return Ok(Vec::new()),
            (None, true) => {
                return Err("sites: at least one hook point (or select: to choose them)".into())
            }
            (None, false) => {}
        }
        self.sites
            .iter()
            .enumerate()
            .map(|(i, s)| s.parse().map_err(|e| format!("sites[{i}]: {e}")))
            .collect()
    }
}

/// Texts of the fit split of every task in `specs`, and what they were.
fn texts(specs: &[DataSpec]) -> Result<(Vec<String>, Vec<DataRecord>), ConfigError> {
    let mut out = Vec::new();
    let mut records = Vec::new();
    for s in specs {
        let id: TaskId = s.task.parse().map_err(TaskError::from)?;
        let t = tasks::load_fit(
            id,
            &LoadOptions {
                data: s.data.clone(),
                limit: s.limit,
                ..Default::default()
            },
        )?;
        let mut keys = Vec::with_capacity(t.len());
        for i in 0..t.len() {
            let text = t.item_text(i).ok_or_else(|| TaskError::Invalid {
                task: id,
                message: "its items are not plain text; fit on realtoxicityprompts, bold, \
                          lambada_openai or perplexity_*"
                    .into(),
            })?;
            keys.push(t.item_key(i));
            out.push(text);
        }
        records.push(DataRecord {
            task: id.to_string(),
            split: "fit".into(),
            n: keys.len(),
            sha256: artifact::keys_sha256(&keys),
        });
    }
    Ok((out, records))
}

/// Bumped whenever fitting code changes what a fit produces from the same inputs (2: the
/// breaker's training starts off the identity; 3: LoRA's too), so an artefact cached by
/// older code is refitted rather than reused.
pub const FIT_REVISION: u32 = 3;

/// Where a fit's artefact is cached: `$SCALPEL_HOME/fixtures/<sha256 of the fitting
/// code's revision, model fingerprint, config and data>`.
pub fn fixture_dir(fingerprint: &str, cfg: &FitConfig, data: &[DataRecord]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(format!("fit-revision-{FIT_REVISION}").as_bytes());
    h.update(fingerprint.as_bytes());
    h.update(serde_json::to_vec(cfg).unwrap_or_default());
    h.update(serde_json::to_vec(data).unwrap_or_default());
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    crate::assets::scalpel_home()
        .join("fixtures")
        .join(&key[..32])
}

/// Where a fit is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FitProgress {
    /// Candidate sites of the `select` sweep measured so far.
    Sweep { done: usize, total: usize },
    /// Training steps taken, and the last step's loss.
    Train {
        done: usize,
        total: usize,
        loss: f64,
    },
}

fn sweep_key(
    fingerprint: &str,
    sel: &SelectConfig,
    max_tokens: usize,
    data: &[DataRecord],
) -> String {
    let mut h = Sha256::new();
    h.update(fingerprint.as_bytes());
    h.update(serde_json::to_vec(sel).unwrap_or_default());
    h.update(max_tokens.to_le_bytes());
    h.update(serde_json::to_vec(data).unwrap_or_default());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sweep cached at `path`, if it is there and whole; a damaged one is reported and
/// recomputed. The file is the sha256 of the JSON on its first line, the JSON after.
fn read_sweep(path: &Path) -> Option<Vec<select::SiteEffect>> {
    let bytes = std::fs::read(path).ok()?;
    let checked = match bytes.iter().position(|&b| b == b'\n') {
        Some(n) if bytes[..n] == *crate::assets::sha256_hex(&bytes[n + 1..]).as_bytes() => {
            serde_json::from_slice(&bytes[n + 1..]).map_err(|e| e.to_string())
        }
        _ => Err("its contents do not match their sha256".to_string()),
    };
    match checked {
        Ok(v) => Some(v),
        Err(why) => {
            eprintln!(
                "scalpel: cached sweep {}: {why}; measuring it again",
                path.display()
            );
            None
        }
    }
}

/// Cache a sweep; a cache that cannot be written costs a recomputation next time,
/// nothing more.
fn write_sweep(path: &Path, effects: &[select::SiteEffect]) {
    let Ok(body) = serde_json::to_vec(effects) else {
        return;
    };
    let mut bytes = crate::assets::sha256_hex(&body).into_bytes();
    bytes.push(b'\n');
    bytes.extend(body);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
        let _ = crate::store::write_atomic(path, &bytes);
    }
}

/// What [`run`] did.
pub struct FitOutcome {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub intervention: Intervention,
    /// Loaded from the fixture cache rather than fitted now.
    pub cached: bool,
}

/// Fit `cfg` on `model` and save it into `out` (default: the fixture cache, reused
/// when the model, config and data are unchanged).
pub fn run(
    model: &LoadedModel,
    cfg: &FitConfig,
    out: Option<&Path>,
    force: bool,
    mut progress: impl FnMut(FitProgress),
) -> Result<FitOutcome, ConfigError> {
    let mut sites = cfg.sites().map_err(FitError::Invalid)?;
    let n_layers = model.model.info().n_layers;
    if let Some((i, p)) = sites
        .iter()
        .enumerate()
        .find(|(_, p)| p.layer().is_some_and(|l| l >= n_layers))
    {
        return Err(ConfigError::Parse {
            path: cfg
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("(fit config)")),
            message: format!("sites[{i}]: {p}: '{}' has {n_layers} layers", model.name),
        });
    }
    let (harmful, mut data) = texts(&cfg.harmful)?;
    let (harmless, d2) = texts(&cfg.harmless)?;
    data.extend(d2);
    let fingerprint = artifact::model_fingerprint(model)?;
    let cache = fixture_dir(&fingerprint, cfg, &data);
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| cache.clone());
    if !force && dir.join(artifact::MANIFEST).is_file() && out.is_none() {
        match artifact::load(&dir, model) {
            Ok((intervention, manifest)) => {
                return Ok(FitOutcome {
                    dir,
                    manifest,
                    intervention,
                    cached: true,
                })
            }
            // The cache is keyed by this model's fingerprint, so a cached artefact that
            // does not load is damaged (a truncated write, a flipped byte the tensors'
            // hash catches): never used, fitted again in its place.
            Err(e) => eprintln!(
                "scalpel: cached fixture {}: {e}; fitting it again",
                dir.display()
            ),
        }
    }
    let c = Contrast { harmful, harmless };
    let mut selection = Vec::new();
    if let Some(sel) = &cfg.select {
        // The sweep depends on the model, the data and its own settings only, so fits of
        // different kinds on the same contrast share it.
        let key = sweep_key(&fingerprint, sel, cfg.max_tokens, &data);
        let path = crate::assets::scalpel_home()
            .join("fixtures")
            .join("sweeps")
            .join(format!("{key}.json"));
        let cached = read_sweep(&path);
        let effects = match cached {
            Some(e) if !e.is_empty() && !force => e,
            _ => {
                let (_, effects) =
                    select::select_sites(model, &c, sel, cfg.max_tokens, |done, total| {
                        progress(FitProgress::Sweep { done, total })
                    })?;
                // A cache that cannot be written costs a recomputation next time, nothing
                // more.
                write_sweep(&path, &effects);
                effects
            }
        };
        sites = effects
            .iter()
            .take(sel.top)
            .map(|e| {
                e.site
                    .parse()
                    .map_err(|m: crate::model::hooks::ParseHookError| {
                        FitError::Invalid(format!("sweep cache {}: {m}", path.display()))
                    })
            })
            .collect::<Result<_, _>>()?;
        selection = effects;
    }
    let mut hyper = BTreeMap::from([("max_tokens".to_string(), cfg.max_tokens as f64)]);
    let (iv, training) = match cfg.kind {
        Kind::Offset if !cfg.offset.alphas.is_empty() => {
            let o = &cfg.offset;
            let (iv, search) = fit::fit_offset_search(
                model,
                &c,
                &sites,
                &o.alphas,
                o.max_perplexity_increase,
                cfg.max_tokens,
            )?;
            for (a, ratio) in &search {
                hyper.insert(format!("perplexity_ratio_at_alpha_{a}"), *ratio);
            }
            hyper.insert("max_perplexity_increase".into(), o.max_perplexity_increase);
            (iv, None)
        }
        Kind::Offset => (
            fit::fit_offset(model, &c, &sites, cfg.offset.alpha, cfg.max_tokens)?,
            None,
        ),
        Kind::Ablate => (
            fit::fit_ablate(model, &c, &sites, cfg.ablate.mode, cfg.max_tokens)?,
            None,
        ),
        Kind::LowRank | Kind::Lora => {
            let mut lr = cfg.low_rank.resolve(cfg.max_tokens);
            if cfg.kind == Kind::Lora {
                lr.form = fit::BreakerForm::Lora;
            }
            hyper.extend([
                ("rank".to_string(), lr.rank as f64),
                ("steps".to_string(), lr.steps as f64),
                ("lr".to_string(), lr.lr),
                ("batch".to_string(), lr.batch as f64),
                ("retain_weight".to_string(), lr.retain_weight),
            ]);
            let (iv, t) = fit::fit_low_rank(model, &c, &sites, &lr, |done, total, loss| {
                progress(FitProgress::Train { done, total, loss })
            })?;
            (iv, Some(t))
        }
        Kind::None => (Intervention::None, None),
    };
    let manifest = artifact::save(
        &dir,
        &iv,
        model,
        &Provenance {
            hyperparameters: hyper,
            data,
            training,
            selection,
        },
    )?;
    Ok(FitOutcome {
        dir,
        manifest,
        intervention: iv,
        cached: false,
    })
}
